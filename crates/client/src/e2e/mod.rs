//! End-to-end encrypted rooms on the client: a layer between the network actor and the UI.
//!
//! [`attach`] puts the layer ([`layer::Layer`]) between [`crate::net`]'s actor and whichever UI
//! drives it (line mode or the TUI): both keep talking `ClientMsg` / `NetEvent` and need not
//! know about MLS. Messages of E2E rooms come out decrypted as ordinary `message` events; what
//! goes into an E2E room is encrypted before it leaves. Two requests have no wire message of
//! their own and travel beside them: [`Request::Remove`] and [`Request::Safety`].
//!
//! The MLS engine (`chatao-e2e`) writes its state to disk on every change, so the layer runs on
//! its own thread, never in an async task. Its state lives in [`state_dir`]: one directory per
//! server key and identity, mode 0700 with 0600 files.
//!
//! Queues: the layer's input ([`LAYER_QUEUE`]) and its output to the UI (the network actor's
//! [`crate::net::EVENT_QUEUE`]) are bounded and apply back-pressure (the forwarder waits), like
//! the network actor itself: nothing is dropped.

pub mod counts;
pub mod layer;
pub mod off;
pub mod pins;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chatao_e2e::{E2e, E2eError, StateLock};
use chatao_proto::ClientMsg;
use chatao_transport::keys::Keypair;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::connect::Handle;
use crate::net::{self, NetEvent, NetHandle, Welcome};
pub use layer::Layer as E2eLayer;
use layer::{Layer, Out};

/// Replaces `path` with `text` atomically, readable by its owner only (mode 0600), the file and
/// its directory fsynced ([`chatao_transport::private_file`]): the layer's small files (commit
/// counts, nickname pins).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use chatao_transport::private_file::{Publish, write_private};
    write_private(path, text.as_bytes(), Publish::Replace)
}

/// Inputs waiting for the layer's thread. Overflow policy: the forwarder waits (back-pressure
/// on the network actor and the UI), nothing is dropped.
pub const LAYER_QUEUE: usize = 1024;

/// What the UI can ask of the E2E layer that is not a wire message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `/remove NICK`: commit the removal of `nick`'s key from `room`.
    Remove { room: String, nick: String },
    /// `/safety`: list every member of `room` with its fingerprint and pin status.
    Safety { room: String },
}

/// Why the E2E state could not be opened. The engine's errors name the directory already.
#[derive(Debug, thiserror::Error)]
#[error("end-to-end encrypted rooms: {cause}")]
pub struct OpenError {
    cause: chatao_e2e::E2eError,
}

impl OpenError {
    /// True when the state is still in use by this process's previous engine (a connection
    /// not yet wound down): trying again shortly can succeed.
    pub fn is_busy(&self) -> bool {
        matches!(self.cause, E2eError::Locked { .. })
    }
}

/// The E2E state directories this process holds, shared by every connection of one profile
/// (clones share it). A state once obtained is kept until the process ends, so that during a
/// reconnection no other process takes it; a state another process holds is asked for again
/// at each connection. Several `chatao` processes of one key thus work: the first holds the
/// E2E state, the others chat in plain rooms ([`off`]).
#[derive(Debug, Clone, Default)]
pub struct StateClaims {
    /// Bounded by the state directories met: one per server key of the list. A blocking
    /// (parking_lot) mutex: held only around a lock attempt, in a blocking task, never across an `.await`.
    held: Arc<Mutex<HashMap<PathBuf, Option<Arc<StateLock>>>>>,
}

/// What a connection gets of the E2E state, decided before its `hello`.
pub enum Setup {
    /// This process has it: the engine, opened.
    Engine { e2e: Box<E2e>, dir: PathBuf },
    /// Another process has it; `say` is what to tell the user, the first time only.
    Off { holder: String, say: Option<String> },
}

impl StateClaims {
    /// Opens the engine for `keys` in `dir` if this process holds that state or can take it
    /// now; else says who holds it. Blocking (file locks, the state file): call it from a
    /// blocking task. `nick` names the separate directory suggested to the user.
    pub fn setup(&self, dir: &Path, keys: &Keypair, nick: &str) -> Result<Setup, OpenError> {
        let mut held = self.held.lock();
        let lock = match held.get(dir) {
            Some(Some(lock)) => lock.clone(),
            known => {
                let told = known.is_some();
                match StateLock::acquire(dir) {
                    Ok(lock) => {
                        let lock = Arc::new(lock);
                        held.insert(dir.to_owned(), Some(lock.clone()));
                        lock
                    }
                    Err(E2eError::Locked { pid, .. }) => {
                        held.insert(dir.to_owned(), None);
                        return Ok(off_setup(dir, pid, nick, told));
                    }
                    Err(cause) => return Err(OpenError { cause }),
                }
            }
        };
        let fp = keys.public().fingerprint();
        let e2e = E2e::open_locked(lock, keys.secret_bytes(), &fp)
            .map_err(|cause| OpenError { cause })?;
        Ok(Setup::Engine { e2e: Box::new(e2e), dir: dir.to_owned() })
    }
}

/// The words for a process without the E2E state held by `pid`.
fn off_setup(dir: &Path, pid: Option<u32>, nick: &str, told: bool) -> Setup {
    let holder = match pid {
        Some(p) => format!("chatao process {p}"),
        None => "another chatao process".to_owned(),
    };
    // The base directory given by --e2e-dir (or its default): two levels above `dir`.
    let base = dir.parent().and_then(Path::parent).unwrap_or(dir);
    let own = base.with_file_name(format!(
        "{}-{nick}",
        base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let say = (!told).then(|| {
        format!(
            "end-to-end encrypted rooms are off in this chatao: their state ({}) is in use by \
             {holder}. Plain rooms work as usual. To use end-to-end encrypted rooms here too, \
             start this chatao with a state of its own: --e2e-dir {}",
            dir.display(),
            own.display()
        )
    });
    Setup::Off { holder, say }
}

/// Where the MLS state of identity `keys` on the server with key `server_fp` lives under `base`:
/// `base/<server>/<identity>`, each a fingerprint in URL-safe base64 (no `/` in a file name).
pub fn state_dir(
    base: &Path,
    server_fp: &chatao_proto::Fingerprint,
    own_fp: &chatao_proto::Fingerprint,
) -> PathBuf {
    base.join(server_fp.url_safe()).join(own_fp.url_safe())
}

enum Input {
    Net(NetEvent),
    Ui(ClientMsg),
    Request(Request),
}

/// Starts a layer over `e2e` (state in `dir`) for the session `welcome` opened: key packages
/// made, rejoins prepared (not sent yet). Blocking: call it from a blocking task.
pub fn prepare(e2e: E2e, dir: &Path, welcome: &Welcome) -> Layer {
    let mut layer = Layer::new(e2e, welcome.nick.clone(), dir);
    layer.start();
    layer
}

/// Puts `layer` between the network actor (`handle`, `events`) and the UI. Returns the handle
/// and events the UI uses instead. What the layer prepared (key packages, rejoins) is queued
/// for the server before anything the UI sends.
pub fn attach(
    mut layer: Layer,
    handle: NetHandle,
    mut events: mpsc::Receiver<NetEvent>,
) -> std::io::Result<(Handle, mpsc::Receiver<NetEvent>)> {
    let (ui_tx, ui_rx) = mpsc::channel(net::EVENT_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<ClientMsg>(net::OUTBOX);
    let (req_tx, mut req_rx) = mpsc::channel::<Request>(16);
    let (in_tx, mut in_rx) = mpsc::channel::<Input>(LAYER_QUEUE);
    tokio::spawn(async move {
        let (mut ui_open, mut req_open) = (true, true);
        loop {
            let input = tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => Input::Net(ev),
                    None => break,
                },
                msg = out_rx.recv(), if ui_open => match msg {
                    Some(m) => Input::Ui(m),
                    None => { ui_open = false; continue; }
                },
                req = req_rx.recv(), if req_open => match req {
                    Some(r) => Input::Request(r),
                    None => { req_open = false; continue; }
                },
            };
            let closed = matches!(input, Input::Net(NetEvent::Closed(_)));
            if in_tx.send(input).await.is_err() || closed {
                break;
            }
        }
    });
    let net_handle = handle;
    std::thread::Builder::new().name("chatao-e2e".into()).spawn(move || {
        // False once the UI is gone. A message for a network actor that has already ended is
        // dropped: the connection is over, and its `Closed` event, still to come through
        // `in_rx`, must reach the UI (returning here lost it, and line mode then took a
        // server's final `bye` for a lost connection).
        let deliver = |layer: &mut Layer| -> bool {
            for out in layer.drain() {
                match out {
                    Out::Net(m) => {
                        let _ = net_handle.blocking_send(m);
                    }
                    Out::Ui(ev) => {
                        if ui_tx.blocking_send(ev).is_err() {
                            return false;
                        }
                    }
                }
            }
            true
        };
        if !deliver(&mut layer) {
            return;
        }
        while let Some(input) = in_rx.blocking_recv() {
            match input {
                Input::Net(NetEvent::Msg(m)) => layer.from_server(m),
                Input::Net(ev) => {
                    let closed = matches!(ev, NetEvent::Closed(_));
                    // Drop the engine before the UI hears the connection is over, so a
                    // reconnection can open the state again.
                    if closed {
                        drop(layer);
                        let _ = ui_tx.blocking_send(ev);
                        return;
                    }
                    let _ = ui_tx.blocking_send(ev);
                    continue;
                }
                Input::Ui(m) => layer.from_ui(m),
                Input::Request(r) => layer.request(r),
            }
            if !deliver(&mut layer) {
                return;
            }
        }
    })?;
    Ok((Handle::with_layer(NetHandle::new(out_tx), req_tx), ui_rx))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys() -> Keypair {
        Keypair::from_secret([9u8; 32])
    }

    #[test]
    fn a_state_once_held_is_kept_between_connections_and_the_reason_said_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("e2e").join("srv").join("me");
        let (first, second) = (StateClaims::default(), StateClaims::default());
        let Ok(Setup::Engine { e2e, .. }) = first.setup(&dir, &keys(), "alice") else { panic!() };
        // The connection ends (its engine is dropped); the lock stays with the profile.
        drop(e2e);
        for told in [false, true] {
            match second.setup(&dir, &keys(), "bob") {
                Ok(Setup::Off { holder, say }) => {
                    assert_eq!(holder, format!("chatao process {}", std::process::id()));
                    assert_eq!(say.is_some(), !told, "{say:?}");
                    if let Some(say) = say {
                        let own = tmp.path().join("e2e-bob");
                        assert!(say.ends_with(&format!("--e2e-dir {}", own.display())), "{say}");
                    }
                }
                _ => panic!("the second profile must not get the state"),
            }
        }
        assert!(matches!(first.setup(&dir, &keys(), "alice"), Ok(Setup::Engine { .. })));
        drop(first);
        assert!(matches!(second.setup(&dir, &keys(), "bob"), Ok(Setup::Engine { .. })));
    }
}
