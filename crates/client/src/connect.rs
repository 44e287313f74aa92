//! A connection as both client modes use it: the network actor ([`crate::net`], which knows
//! nothing of end-to-end encryption) with the E2E layer ([`crate::e2e`]) composed over it.
//!
//! [`connect_as`] opens the connection with [`net::connect_with`], opening the E2E state between
//! the handshake and `hello` (a state that cannot be opened ends the attempt before the server
//! sees a session), then puts the layer, or without the state its stand-in
//! ([`crate::e2e::off`]), between the actor and the UI. The UI holds a [`Handle`]: wire
//! messages go through the layer to the actor, and the layer's own requests (`/remove`,
//! `/safety`) to the layer.

use std::path::Path;

use chatao_proto::{ClientMsg, HelloFlags};
use tokio::sync::mpsc;

use crate::e2e::{self, OpenError, Request, Setup, StateClaims};
use crate::net::{self, ConnectOptions, NetEvent, NetHandle, SendError, Welcome};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Net(#[from] net::ConnectError),
    /// The E2E state could not be opened (damaged, unreadable, or still held by this process's
    /// previous connection: [`OpenError::is_busy`]); found before `hello`.
    #[error(transparent)]
    E2e(#[from] OpenError),
    /// The E2E layer could not be started (its thread, or the task opening the state, failed).
    #[error("end-to-end encrypted rooms: the layer could not start: {0}")]
    Layer(#[source] std::io::Error),
}

/// What a successful connection gives: the welcome, the handle, and the events for the UI.
pub type Connected = (Welcome, Handle, mpsc::Receiver<NetEvent>);

/// The UI's end of a connection: cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Wire messages: to the E2E layer when there is one, else to the actor.
    net: NetHandle,
    /// The E2E layer's requests, when it is attached.
    requests: Option<mpsc::Sender<Request>>,
    /// Without the E2E state ([`crate::e2e::off`]): where the messages that need it go instead
    /// of the server.
    refused: Option<mpsc::Sender<ClientMsg>>,
}

impl Handle {
    /// A handle straight to the network actor, with no E2E layer.
    pub fn plain(net: NetHandle) -> Handle {
        Handle { net, requests: None, refused: None }
    }

    /// A handle over the E2E layer's channels ([`crate::e2e::attach`]).
    pub(crate) fn with_layer(net: NetHandle, requests: mpsc::Sender<Request>) -> Handle {
        Handle { net, requests: Some(requests), refused: None }
    }

    /// A handle to the actor that sends what needs the E2E state
    /// ([`crate::e2e::off::needs_state`]) and the E2E requests to `refused` and `requests`.
    pub(crate) fn refusing(
        net: NetHandle,
        refused: mpsc::Sender<ClientMsg>,
        requests: mpsc::Sender<Request>,
    ) -> Handle {
        Handle { net, requests: Some(requests), refused: Some(refused) }
    }

    /// Queues `msg`, waiting while the outbox is full.
    pub async fn send(&self, msg: ClientMsg) -> Result<(), SendError> {
        match self.refusal(&msg) {
            Some(refused) => refused.send(msg).await.map_err(|_| SendError::Closed),
            None => self.net.send(msg).await,
        }
    }

    /// Queues `msg` without waiting.
    pub fn try_send(&self, msg: ClientMsg) -> Result<(), SendError> {
        match self.refusal(&msg) {
            Some(refused) => refused.try_send(msg).map_err(full_or_closed),
            None => self.net.try_send(msg),
        }
    }

    /// Waits until the outbox has room for one message (for a caller that then uses
    /// [`Handle::try_send`] and is the only one sending). Errors once the actor is gone.
    pub async fn ready(&self) -> Result<(), SendError> {
        self.net.ready().await
    }

    /// Hands `req` to the E2E layer without waiting; [`SendError::Closed`] when there is none.
    pub fn try_request(&self, req: Request) -> Result<(), SendError> {
        match &self.requests {
            Some(tx) => tx.try_send(req).map_err(full_or_closed),
            None => Err(SendError::Closed),
        }
    }

    /// Hands `req` to the E2E layer, waiting while its queue is full.
    pub async fn request(&self, req: Request) -> Result<(), SendError> {
        match &self.requests {
            Some(tx) => tx.send(req).await.map_err(|_| SendError::Closed),
            None => Err(SendError::Closed),
        }
    }

    /// Where `msg` goes instead of the server, on a connection without the E2E state.
    fn refusal(&self, msg: &ClientMsg) -> Option<&mpsc::Sender<ClientMsg>> {
        self.refused.as_ref().filter(|_| e2e::off::needs_state(msg))
    }
}

fn full_or_closed<T>(e: mpsc::error::TrySendError<T>) -> SendError {
    match e {
        mpsc::error::TrySendError::Full(_) => SendError::Full,
        mpsc::error::TrySendError::Closed(_) => SendError::Closed,
    }
}

/// Connects to one server, with end-to-end encrypted rooms when `e2e_dir` says where their
/// state lives (one directory per server key and identity is made under it,
/// [`e2e::state_dir`]); the state is this connection's only.
pub async fn connect(
    opts: &ConnectOptions,
    e2e_dir: Option<&Path>,
) -> Result<Connected, ConnectError> {
    connect_as(opts, HelloFlags::default(), &[], e2e_dir, &StateClaims::default()).await
}

/// Connects to one server of a list (`siblings`: the others' `HOST:PORT`, whose pins vouch for
/// this one, [`net::connect_among`]), saying `hello` with `flags`, with the E2E state under
/// `e2e_dir` held through `claims` (kept from one connection to the next). Whether this
/// connection has the state is decided after the handshake and before `hello`: a state
/// another process holds makes a connection without E2E rooms ([`crate::e2e::off`]), never a
/// session the server sees begin and end at once.
pub async fn connect_as(
    opts: &ConnectOptions,
    flags: HelloFlags,
    siblings: &[String],
    e2e_dir: Option<&Path>,
    claims: &StateClaims,
) -> Result<Connected, ConnectError> {
    let own = opts.keys.public().fingerprint();
    let open_state = |server: &chatao_transport::Fingerprint| {
        let dir = e2e_dir.map(|base| e2e::state_dir(base, server, &own));
        let (claims, keys, nick) = (claims.clone(), opts.keys.clone(), opts.nick.clone());
        async move {
            let Some(dir) = dir else { return Ok(None) };
            let opened = tokio::task::spawn_blocking(move || claims.setup(&dir, &keys, &nick))
                .await
                .map_err(|e| ConnectError::Layer(std::io::Error::other(e)))?;
            Ok(Some(opened?))
        }
    };
    let (welcome, handle, events, setup) =
        match net::connect_with(opts, flags, siblings, open_state).await {
            Ok(connected) => connected,
            Err(net::OpenError::Net(e)) => return Err(e.into()),
            Err(net::OpenError::BeforeHello(e)) => return Err(e),
        };
    match setup {
        None => Ok((welcome, Handle::plain(handle), events)),
        Some(Setup::Off { holder, say }) => {
            let (handle, events) = e2e::off::attach(holder, say, handle, events);
            Ok((welcome, handle, events))
        }
        // End-to-end encrypted rooms: the layer sits between the actor and the UI.
        Some(Setup::Engine { e2e, dir }) => {
            let w = welcome.clone();
            let layer = tokio::task::spawn_blocking(move || e2e::prepare(*e2e, &dir, &w))
                .await
                .map_err(|e| ConnectError::Layer(std::io::Error::other(e)))?;
            let (handle, events) =
                e2e::attach(layer, handle, events).map_err(ConnectError::Layer)?;
            Ok((welcome, handle, events))
        }
    }
}
