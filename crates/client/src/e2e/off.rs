//! A connection without the E2E state, which another `chatao` process of the same key holds
//! ([`super::StateClaims`]): plain rooms work as usual; what needs the state is refused here,
//! with the reason, instead of reaching the server half done (an E2E room created without its
//! group, an invitation never committed).
//!
//! [`attach`] puts a small task between the network actor's events and the UI. It says once,
//! first, why E2E rooms are off (when the claim says so), adds a line when an E2E room is
//! joined (its messages cannot be read here), and answers the refused messages and the E2E
//! requests. Messages for the server do not pass through it: the UI's handle sends them to the
//! actor directly ([`Handle::refusing`]), so a lost connection still reports them unsent.
//!
//! `/invite NICK` reaches it as an E2E invitation would (a key package fetch for the room):
//! in a room not seen to be E2E it is the plain room's invite list, so the task sends the
//! server's `invite` for it; in an E2E room it is refused here. (Past [`ROOMS_TOLD`] E2E
//! rooms, one not remembered gets the plain invite, which the server refuses as `invalid`.)

use std::collections::HashSet;

use chatao_proto::{ClientMsg, RoomName, ServerMsg};
use tokio::sync::mpsc;

use super::Request;
use crate::connect::Handle;
use crate::net::{self, NetEvent, NetHandle};

/// Refused messages and requests waiting for the task. Overflow policy: the UI's send waits
/// (`send`) or is told the queue is full (`try_send`), as for the actor's own outbox.
pub const REFUSED_QUEUE: usize = 16;
/// E2E rooms remembered as told about. Overflow policy: no more are remembered (a later join
/// of another one says it again).
pub const ROOMS_TOLD: usize = 256;

/// True for what only a client holding the E2E state can do: create an E2E room, invite
/// into one (fetch a key package for it), send MLS messages.
pub fn needs_state(msg: &ClientMsg) -> bool {
    matches!(
        msg,
        ClientMsg::Create { e2e: true, .. }
            | ClientMsg::FetchKeyPackage { room: Some(_), .. }
            | ClientMsg::Sealed { .. }
            | ClientMsg::Commit { .. }
            | ClientMsg::KeyPackages { .. }
    )
}

/// Puts the task between `events` and the UI. `holder` names who has the state ("chatao
/// process 1234"); `say`, if given, is printed first. Returns the handle and events the UI
/// uses instead.
pub fn attach(
    holder: String,
    say: Option<String>,
    handle: NetHandle,
    mut events: mpsc::Receiver<NetEvent>,
) -> (Handle, mpsc::Receiver<NetEvent>) {
    let (ui_tx, ui_rx) = mpsc::channel(net::EVENT_QUEUE);
    let (refused_tx, mut refused_rx) = mpsc::channel::<ClientMsg>(REFUSED_QUEUE);
    let (req_tx, mut req_rx) = mpsc::channel::<Request>(REFUSED_QUEUE);
    // Plain invitations go on to the server through the handle's own outbox.
    let server = handle.clone();
    let handle = Handle::refusing(handle, refused_tx, req_tx);
    let off = format!("end-to-end encrypted rooms are off here ({holder} has their state)");
    tokio::spawn(async move {
        let note = |text: String| NetEvent::E2e { text, warning: false };
        if let Some(text) = say
            && ui_tx.send(note(text)).await.is_err()
        {
            return;
        }
        let mut told: HashSet<RoomName> = HashSet::new();
        let (mut refused_open, mut req_open) = (true, true);
        loop {
            let extra = tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return };
                    let closed = matches!(ev, NetEvent::Closed(_));
                    let joined = match &ev {
                        NetEvent::Msg(ServerMsg::Members { room, e2e: true, .. })
                            if !told.contains(room) =>
                        {
                            if told.len() < ROOMS_TOLD {
                                told.insert(room.clone());
                            }
                            Some(format!("{room} is end-to-end encrypted: its messages cannot be read or sent here; {off}"))
                        }
                        _ => None,
                    };
                    if ui_tx.send(ev).await.is_err() || closed {
                        return;
                    }
                    joined
                }
                msg = refused_rx.recv(), if refused_open => match msg {
                    Some(ClientMsg::FetchKeyPackage { nick, room: Some(room) })
                        if RoomName::parse(&room).is_ok_and(|r| !told.contains(&r)) =>
                    {
                        match server.send(ClientMsg::Invite { room: room.clone(), nick: nick.clone() }).await {
                            Ok(()) => None,
                            Err(_) => Some(format!("/invite {nick} into {room}: not sent: the connection is closed")),
                        }
                    }
                    Some(msg) => Some(refusal(&msg, &off)),
                    None => { refused_open = false; None }
                },
                req = req_rx.recv(), if req_open => match req {
                    Some(Request::Remove { room, nick }) => Some(format!("/remove {nick} in {room}: not done: {off}")),
                    Some(Request::Safety { room }) => Some(format!("/safety in {room}: {off}")),
                    None => { req_open = false; None }
                },
            };
            if let Some(text) = extra
                && ui_tx.send(note(text)).await.is_err()
            {
                return;
            }
        }
    });
    (handle, ui_rx)
}

/// What to tell the user about a message that was not sent.
fn refusal(msg: &ClientMsg, off: &str) -> String {
    match msg {
        ClientMsg::Create { room, .. } => format!("{room}: not created: {off}"),
        ClientMsg::FetchKeyPackage { nick, room: Some(room) } => {
            format!("/invite {nick} into {room}: not done: {off}")
        }
        _ => format!("not sent: {off}"),
    }
}
