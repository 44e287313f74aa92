//! The owner of a hub and its bus thread, as mini-redis's `DbDropGuard` owns its `Db`: the hub
//! owns the bus (it queues events there), the bus thread hands what it wrote back through
//! [`crate::bus::Deliver`] and holds the hub's state until it is stopped. Nothing else keeps
//! the thread alive, and nothing but this guard ends it.
//!
//! Make the hub with [`super::Hub::start`] or [`super::Hub::with_cluster`]; hand out clones with
//! [`HubGuard::hub`] (or use the guard itself: it dereferences to the hub). At the end,
//! [`HubGuard::finish`] stops the bus (what is queued is still written and delivered) and
//! gives back the thread to join, with a time limit of the caller's; dropping the guard stops
//! the bus and joins the thread (so a test that drops its hub finds everything on disk).

use std::thread::JoinHandle;

use super::Hub;

/// A hub and its bus thread; see the module documentation.
#[derive(Debug)]
pub struct HubGuard {
    hub: Hub,
    thread: Option<JoinHandle<()>>,
}

impl HubGuard {
    pub(super) fn new(hub: Hub, thread: JoinHandle<()>) -> HubGuard {
        HubGuard { hub, thread: Some(thread) }
    }

    /// A handle to the hub (all clones are the same hub).
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// Stops the bus once what is queued now is written and delivered; the thread to join
    /// to wait for that. Events queued later are refused (`BusFull::Closed`), so call it once
    /// the sessions are done.
    pub fn finish(mut self) -> Option<JoinHandle<()>> {
        self.hub.bus().stop();
        self.thread.take()
    }
}

impl std::ops::Deref for HubGuard {
    type Target = Hub;

    fn deref(&self) -> &Hub {
        &self.hub
    }
}

impl Drop for HubGuard {
    fn drop(&mut self) {
        self.hub.bus().stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the bus thread panicked");
        }
    }
}
