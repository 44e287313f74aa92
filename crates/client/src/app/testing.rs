//! Fixtures for tests of the app and of the screen: an app at a fixed time in UTC, and
//! shorthands for events.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chatao_proto::{Limits, Member, MessageKind, Nick, RoomName, ServerMsg};
use chrono::FixedOffset;
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};

use super::{App, Config, Effect, Event, Zone};
use crate::net::{NetEvent, Welcome};
use crate::trust::Trusted;

/// 2023-11-14 22:13:20 UTC.
pub const T0: u64 = 1_700_000_000_000;
pub const SERVER_FP: &str = "SHA256:Xk3v9QaBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789c";

pub fn nick(n: &str) -> Nick {
    Nick::parse(n).unwrap()
}

pub fn room(r: &str) -> RoomName {
    RoomName::parse(r).unwrap()
}

pub fn welcome(me: &str) -> Welcome {
    Welcome {
        session: 1,
        nick: nick(me),
        fingerprint: chatao_proto::Fingerprint::example("client"),
        server: "chataosrv 0.1.0".into(),
        limits: Limits { max_text_bytes: 2000, rate_per_sec: 5, burst: 10 },
        rooms: Vec::new(),
        fixed_rooms: false,
        server_fingerprint: chatao_proto::Fingerprint::parse(SERVER_FP).unwrap(),
        trusted: Trusted::Known,
    }
}

/// alice, connected to 127.0.0.1:7000, in a `width`×`height` terminal, at [`T0`] in UTC.
pub fn app(width: u16, height: u16) -> App {
    App::new(config(), &welcome("alice"), (width, height), Instant::now(), T0)
}

/// The config of [`app`]: one server, UTC, the built-in defaults.
pub fn config() -> Config {
    Config {
        servers: vec!["127.0.0.1:7000".into()],
        first: 0,
        bell: true,
        zone: Zone::Fixed(FixedOffset::east_opt(0).unwrap()),
        notify: Default::default(),
        filters: Default::default(),
        chat_log: false,
        seconds: false,
        theme: Default::default(),
        url_command: Vec::new(),
    }
}

pub fn net(app: &mut App, msg: ServerMsg) -> Vec<Effect> {
    app.update(Event::Net(NetEvent::Msg(msg)))
}

pub fn say(r: &str, id: u64, from: &str, text: &str) -> ServerMsg {
    ServerMsg::Message {
        cid: None,
        room: room(r),
        id,
        time: T0 + id * 60_000,
        from: nick(from),
        kind: MessageKind::Normal,
        text: text.into(),
        history: false,
    }
}

pub fn joined(r: &str, who: &str) -> ServerMsg {
    ServerMsg::Join {
        room: room(r),
        nick: nick(who),
        fingerprint: chatao_proto::Fingerprint::example(&format!("{who}key0000")),
    }
}

pub fn members(r: &str, nicks: &[&str]) -> ServerMsg {
    ServerMsg::Members {
        room: room(r),
        members: nicks
            .iter()
            .map(|n| Member {
                nick: nick(n),
                fingerprint: chatao_proto::Fingerprint::example("x"),
                away: None,
                bot: false,
                op: false,
            })
            .collect(),
        e2e: false,
        total: None,
        next: None,
        more: false,
    }
}

pub fn key_with(app: &mut App, code: KeyCode, mods: KeyModifiers) -> Vec<Effect> {
    app.update(Event::Term(TermEvent::Key(KeyEvent::new(code, mods))))
}

pub fn key(app: &mut App, code: KeyCode) -> Vec<Effect> {
    key_with(app, code, KeyModifiers::NONE)
}

pub fn ctrl(app: &mut App, c: char) -> Vec<Effect> {
    key_with(app, KeyCode::Char(c), KeyModifiers::CONTROL)
}

pub fn alt(app: &mut App, c: char) -> Vec<Effect> {
    key_with(app, KeyCode::Char(c), KeyModifiers::ALT)
}

pub fn type_str(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

/// Types `line` and presses Enter.
pub fn enter(app: &mut App, line: &str) -> Vec<Effect> {
    type_str(app, line);
    key(app, KeyCode::Enter)
}

/// Advances the app's clock by `d`.
pub fn advance(app: &mut App, d: Duration) -> Vec<Effect> {
    let now = app.now + d;
    let wall_ms = app.wall_ms + d.as_millis() as u64;
    app.update(Event::Tick { now, wall_ms })
}

/// The messages among `effects`, with their client ids (random).
pub fn sent_with_ids(effects: &[Effect]) -> Vec<chatao_proto::ClientMsg> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { msg, .. } => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

/// `msg` without its client id, after checking that a message that takes one has one.
pub fn without_id(mut msg: chatao_proto::ClientMsg) -> chatao_proto::ClientMsg {
    use chatao_proto::ClientMsg;
    if let ClientMsg::Say { cid, .. } | ClientMsg::Me { cid, .. } | ClientMsg::Msg { cid, .. } =
        &mut msg
    {
        assert!(cid.is_some(), "every message gets a client id");
        *cid = None;
    }
    msg
}

/// The messages among `effects`, without their client ids ([`without_id`]).
pub fn sent(effects: &[Effect]) -> Vec<chatao_proto::ClientMsg> {
    sent_with_ids(effects).into_iter().map(without_id).collect()
}

/// A chatting app: alice in #lobby with bob and carol, and in #rust with bob.
pub fn chatting(width: u16, height: u16) -> App {
    let mut a = app(width, height);
    net(&mut a, joined("#lobby", "alice"));
    net(&mut a, members("#lobby", &["alice", "bob", "carol"]));
    a.update(Event::Net(NetEvent::Msg(say("#lobby", 1, "bob", "morning all"))));
    net(&mut a, say("#lobby", 2, "carol", "hi bob! did anyone try the new release?"));
    net(&mut a, say("#lobby", 3, "alice", "yes, works fine here"));
    enter(&mut a, "/join #rust");
    net(&mut a, joined("#rust", "alice"));
    net(&mut a, members("#rust", &["alice", "bob"]));
    a.update(Event::Term(TermEvent::Key(KeyEvent::new(KeyCode::Char('1'), KeyModifiers::ALT))));
    a
}

/// A private message `id` from `from` to `to`.
pub fn private(id: u64, from: &str, to: &str, text: &str) -> ServerMsg {
    ServerMsg::Private {
        cid: None,
        id,
        time: T0 + id * 60_000,
        from: nick(from),
        to: nick(to),
        kind: MessageKind::Normal,
        text: text.into(),
    }
}
