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
pub mod pins;

use std::path::{Path, PathBuf};

use chatao_e2e::E2e;
use chatao_proto::ClientMsg;
use chatao_transport::keys::Keypair;
use tokio::sync::mpsc;

use crate::net::{self, NetEvent, NetHandle, Welcome};
pub use layer::Layer as E2eLayer;
use layer::{Layer, Out};

/// Replaces `path` with `text` atomically (a temporary file, synced, then renamed), readable by
/// its owner only (mode 0600): the layer's small files (commit counts, nickname pins).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
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

/// Why the E2E state could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("end-to-end state in {dir}: {source}")]
pub struct OpenError {
    dir: PathBuf,
    source: chatao_e2e::E2eError,
}

/// Where the MLS state of identity `keys` on the server with key `server_fp` lives under `base`:
/// `base/<server>/<identity>`, each a fingerprint in URL-safe base64 (no `/` in a file name).
pub fn state_dir(base: &Path, server_fp: &str, own_fp: &str) -> PathBuf {
    let safe = |fp: &str| fp.trim_start_matches("SHA256:").replace('/', "_").replace('+', "-");
    base.join(safe(server_fp)).join(safe(own_fp))
}

/// Opens the engine for `keys` in `dir` (created 0700).
pub fn open(dir: &Path, keys: &Keypair) -> Result<E2e, OpenError> {
    let fp = keys.public().fingerprint();
    E2e::open(dir, keys.secret_bytes(), &fp)
        .map_err(|source| OpenError { dir: dir.to_owned(), source })
}

enum Input {
    Net(NetEvent),
    Ui(ClientMsg),
    Request(Request),
}

/// Opens the engine for `keys` in `dir` and starts a layer for the session `welcome` opened:
/// key packages made, rejoins prepared (not sent yet). Blocking: call it from a blocking task.
pub fn prepare(dir: &Path, keys: &Keypair, welcome: &Welcome) -> Result<Layer, OpenError> {
    let e2e = open(dir, keys)?;
    let mut layer = Layer::new(e2e, welcome.nick.clone(), dir);
    layer.start();
    Ok(layer)
}

/// Puts `layer` between the network actor (`handle`, `events`) and the UI. Returns the handle
/// and events the UI uses instead. What the layer prepared (key packages, rejoins) is queued
/// for the server before anything the UI sends.
pub fn attach(
    mut layer: Layer,
    handle: NetHandle,
    mut events: mpsc::Receiver<NetEvent>,
) -> std::io::Result<(NetHandle, mpsc::Receiver<NetEvent>)> {
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
    Ok((NetHandle::with_requests(out_tx, req_tx), ui_rx))
}
