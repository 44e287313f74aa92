//! What a node says to the others, in plain types the hub understands: its users
//! ([`Presence`], [`UserState`]), its room events ([`RoomEvent`], [`RoomBody`]), private messages
//! ([`Private`]) and operator actions ([`Moderation`]), and what the hub hands to the cluster
//! task ([`Outbound`]). `crate::cluster` carries them between nodes as JSON.

use chatao_proto::{LeaveReason, MessageKind, ModAction, Nick, RoomName, ServerMsg};
use serde::{Deserialize, Serialize};

use crate::access::Ban;
use crate::hub::SessionId;
use chatao_proto::Fingerprint;

/// A node of the cluster: a random number drawn when the process starts, so a restarted node
/// is a new node and nothing of its previous life is mistaken for live.
pub type NodeId = u64;

/// A session on another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteId {
    pub node: NodeId,
    pub session: SessionId,
}

/// A user online on some node, as nodes describe their users to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    pub session: SessionId,
    pub nick: Nick,
    pub fingerprint: Fingerprint,
    pub rooms: Vec<RoomName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<String>,
    pub since: u64,
    /// A quiet session (a bot): no node announces its joins and parts. Absent (a node that
    /// predates it): false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiet: bool,
}

/// A change to one node's users, announced to the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Presence {
    Online {
        user: UserState,
    },
    Offline {
        session: SessionId,
        reason: LeaveReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Join {
        session: SessionId,
        room: RoomName,
    },
    Part {
        session: SessionId,
        room: RoomName,
        reason: LeaveReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Nick {
        session: SessionId,
        new: Nick,
    },
    Away {
        session: SessionId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// What a room event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RoomBody {
    Message {
        #[serde(default)]
        kind: MessageKind,
        text: String,
    },
    Topic {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// An operator hid (`hidden`) or showed again the room's bots (`hub/bots.rs`). A node that
    /// predates it skips the event (an unknown body), as any it cannot read.
    Bots { hidden: bool },
    /// A room operator's change to the room's operators, modes, invites or bans
    /// (`hub/room_ops.rs`); skipped by a node that predates it.
    RoomOps { change: crate::hub::room_ops::RoomChange },
}

/// A room event as it travels through the cluster's ordered stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    pub room: RoomName,
    pub time: u64,
    pub from: Nick,
    /// Where it was said, so that a failure to publish can be reported to the sender.
    pub node: NodeId,
    pub session: SessionId,
    /// The sender's key fingerprint (what its `cid` is unique for).
    pub fingerprint: Fingerprint,
    /// The sender's id for the event, when it gave one: the JetStream message id is derived
    /// from it (so a re-send through any node is dropped as a duplicate), and every node
    /// remembers it with the echo ([`crate::hub::sent::SentIds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<chatao_proto::Cid>,
    #[serde(flatten)]
    pub body: RoomBody,
}

/// A private message to a user on another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Private {
    pub id: u64,
    pub time: u64,
    pub from: Nick,
    pub to: Nick,
    #[serde(default)]
    pub kind: MessageKind,
    pub text: String,
    /// The sender's session on the sending node (for its acknowledgement).
    pub session: SessionId,
    /// The sender's key fingerprint (what `cid` is unique for).
    pub fingerprint: Fingerprint,
    /// The sender's id for the message, when it gave one: both copies carry it, and both
    /// nodes remember it with the message ([`crate::hub::sent::SentIds`]), so a re-send is answered
    /// with the first copy and not delivered twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<chatao_proto::Cid>,
}

impl Private {
    /// The message as its recipient and its sender receive it.
    pub fn to_msg(&self) -> ServerMsg {
        ServerMsg::Private {
            cid: self.cid,
            id: self.id,
            time: self.time,
            from: self.from.clone(),
            to: self.to.clone(),
            kind: self.kind,
            text: self.text.clone(),
        }
    }
}

/// An operator action, for every node to announce and the node concerned to enforce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moderation {
    pub action: ModAction,
    /// As shown in the notice: a nickname or a fingerprint.
    pub target: String,
    /// The key acted upon, when the action is about a key (ban, mute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    pub by: Nick,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// What the hub hands to the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Publish on the room stream.
    Room(RoomEvent),
    /// Tell the other nodes about a local user.
    Presence(Presence),
    /// Deliver to a user on `node`.
    Private { node: NodeId, msg: Private },
    /// Announce and enforce everywhere; `ban`/`unban`/`mute`/`unmute` are also written to the
    /// shared buckets.
    Moderation(Moderation),
    /// Write a ban to the shared bucket (`None`: lift the ban on the fingerprint).
    Ban { fingerprint: Fingerprint, ban: Option<Ban> },
    /// Write a mute to the shared bucket (`None` inside: no end; outer `None`: lift it).
    Mute { fingerprint: Fingerprint, until: Option<Option<u64>> },
    /// Forget `room` in the key's remembered set in the shared bucket (a room operator's kick
    /// or ban; joins and parts write it from the session, `session.rs`). Sent by the node of
    /// the operator who made the change only, once it applies it from the stream. `before`:
    /// the change's stream position; a rejoin remembered at or after it stays
    /// (`cluster/identity.rs` `remember`).
    ForgetMembership { fingerprint: Fingerprint, room: RoomName, before: u64 },
}
