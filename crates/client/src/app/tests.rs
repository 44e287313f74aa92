//! `App::update` driven by events, as the event loop drives it: editing, history,
//! completion, rooms, sending, reconnection and catch-up, quitting.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_proto::{ClientMsg, ErrorCode, MessageKind, ServerMsg};
use crossterm::event::{Event as TermEvent, KeyCode, KeyModifiers, MouseEvent, MouseEventKind};

use super::buffer::{Kind, Target};
use super::testing::*;
use super::*;
use crate::net::Closed;

fn lost(app: &mut App) -> Vec<Effect> {
    app.update(Event::Net(NetEvent::Closed(Closed::Lost("connection lost: reset".into()))))
}

fn texts(app: &App) -> Vec<String> {
    app.current_buffer().entries.iter().map(|e| e.text.clone()).collect()
}

#[test]
fn editing_keys() {
    let mut a = app(80, 24);
    type_str(&mut a, "hello world");
    ctrl(&mut a, 'a');
    type_str(&mut a, ">> ");
    ctrl(&mut a, 'e');
    ctrl(&mut a, 'w');
    assert_eq!(a.editor.text(), ">> hello ");
    alt(&mut a, 'b');
    key(&mut a, KeyCode::Backspace);
    assert_eq!(a.editor.text(), ">>hello ");
    alt(&mut a, 'f');
    ctrl(&mut a, 'k');
    assert_eq!(a.editor.text(), ">>hello");
    key(&mut a, KeyCode::Home);
    key(&mut a, KeyCode::Delete);
    key(&mut a, KeyCode::Right);
    ctrl(&mut a, 'u');
    assert_eq!(a.editor.text(), "hello");
    ctrl(&mut a, 'y');
    assert_eq!(a.editor.text(), ">hello");
    key(&mut a, KeyCode::End);
    ctrl(&mut a, 'h');
    assert_eq!(a.editor.text(), ">hell");
}

#[test]
fn enter_sends_to_the_current_room_and_up_recalls_it() {
    let mut a = chatting(80, 24);
    let effects = enter(&mut a, "hello there");
    let effects: Vec<Effect> = effects
        .into_iter()
        .map(|e| match e {
            Effect::Send { msg, restore } => Effect::Send { msg: without_id(msg), restore },
            other => other,
        })
        .collect();
    assert_eq!(
        effects,
        vec![Effect::Send {
            msg: ClientMsg::Say { cid: None, room: "#lobby".into(), text: "hello there".into() },
            restore: Some("hello there".into()),
        }]
    );
    assert!(a.editor.is_empty());
    enter(&mut a, "/me waves");
    type_str(&mut a, "draft");
    key(&mut a, KeyCode::Up);
    assert_eq!(a.editor.text(), "/me waves");
    key(&mut a, KeyCode::Up);
    assert_eq!(a.editor.text(), "hello there");
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Down);
    assert_eq!(a.editor.text(), "draft");
}

#[test]
fn bad_commands_and_refused_text_stay_in_the_input_line() {
    let mut a = chatting(80, 24);
    assert!(enter(&mut a, "/frobnicate").is_empty());
    assert_eq!(a.editor.text(), "/frobnicate");
    assert!(texts(&a).last().unwrap().contains("unknown command /frobnicate"));
    ctrl(&mut a, 'u');
    let long = "x".repeat(2001);
    assert!(enter(&mut a, &long).is_empty());
    assert_eq!(a.editor.text(), long);
    assert!(texts(&a).last().unwrap().contains("over the limit of 2000"));
}

#[test]
fn tab_completes_nicks_commands_and_rooms() {
    let mut a = chatting(80, 24);
    type_str(&mut a, "b");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "bob: ");
    ctrl(&mut a, 'u');
    type_str(&mut a, "hi ");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "hi bob ", "an empty word cycles the members, not us");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "hi carol ");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "hi bob ");
    key(&mut a, KeyCode::BackTab);
    assert_eq!(a.editor.text(), "hi carol ");
    type_str(&mut a, "x");
    assert_eq!(a.editor.text(), "hi carol x", "typing accepts the completion");
    ctrl(&mut a, 'u');
    type_str(&mut a, "/sw");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "/switch ");
    type_str(&mut a, "ru");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "/switch #rust ");
    ctrl(&mut a, 'u');
    type_str(&mut a, "zz");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "zz", "no candidate: nothing changes");
}

#[test]
fn join_switches_on_confirmation_and_keys_switch_rooms() {
    let mut a = app(80, 24);
    let effects = enter(&mut a, "/join rust");
    assert_eq!(sent(&effects), vec![ClientMsg::Join { room: "#rust".into(), since: None }]);
    assert_eq!(a.current_buffer().target.name(), "#lobby", "not before the server confirms");
    net(&mut a, joined("#rust", "alice"));
    assert_eq!(a.current_buffer().target.name(), "#rust");
    net(&mut a, joined("#go", "alice"));
    assert_eq!(a.current_buffer().target.name(), "#rust", "a join we did not ask for stays put");
    assert_eq!(a.buffers.len(), 3);

    alt(&mut a, '1');
    assert_eq!(a.current, 0);
    alt(&mut a, '3');
    assert_eq!(a.current, 2);
    alt(&mut a, '9');
    assert_eq!(a.current, 2, "no buffer 9: nothing happens");
    ctrl(&mut a, 'n');
    assert_eq!(a.current, 0, "Ctrl-N wraps around");
    ctrl(&mut a, 'p');
    assert_eq!(a.current, 2);
    enter(&mut a, "/switch rust");
    assert_eq!(a.current, 1);
    let effects = enter(&mut a, "/join #lobby");
    assert!(effects.is_empty(), "joining a room we are in just shows it");
    assert_eq!(a.current, 0);
    enter(&mut a, "/switch #nowhere");
    assert!(texts(&a).last().unwrap().contains("you are not in #nowhere"));
}

#[test]
fn unread_and_mentions_mark_other_rooms_and_ring_the_bell() {
    let mut a = chatting(80, 24);
    assert_eq!(a.current, 0);
    assert!(net(&mut a, say("#rust", 10, "bob", "anyone here?")).is_empty());
    let effects = net(&mut a, say("#rust", 11, "bob", "ping Alice: look at this"));
    assert_eq!(effects, vec![Effect::Bell]);
    net(&mut a, say("#rust", 12, "alice", "my own words do not count"));
    let rust = &a.buffers[1];
    assert_eq!((rust.unread, rust.mentioned), (2, true));
    assert!(rust.entries.iter().any(|e| e.mention));
    net(&mut a, say("#lobby", 20, "bob", "malice is not a mention"));
    assert!(!a.buffers[0].entries.back().unwrap().mention);
    assert_eq!(a.buffers[0].unread, 0, "the room shown has nothing unread");

    alt(&mut a, 'a');
    assert_eq!(a.current, 1, "Alt-A goes to the mention");
    assert_eq!((a.buffers[1].unread, a.buffers[1].mentioned), (0, false));

    a.config.bell = false;
    assert!(net(&mut a, say("#lobby", 21, "bob", "alice?")).is_empty(), "--no-bell");
}

#[test]
fn private_messages_open_a_conversation() {
    let mut a = chatting(80, 24);
    let pm = |from: &str, to: &str, text: &str| ServerMsg::Private {
        cid: None,
        id: 1,
        time: T0,
        from: nick(from),
        to: nick(to),
        kind: MessageKind::Normal,
        text: text.into(),
    };
    let effects = net(&mut a, pm("bob", "alice", "psst"));
    assert_eq!(effects, vec![Effect::Bell]);
    let i = a.find("bob").unwrap();
    assert_eq!(a.buffers[i].target, Target::Query(nick("bob")));
    assert!(a.buffers[i].mentioned);
    a.switch_to(i);
    let effects = enter(&mut a, "hi back");
    assert_eq!(
        sent(&effects),
        vec![ClientMsg::Msg { cid: None, to: "bob".into(), text: "hi back".into() }]
    );
    assert!(enter(&mut a, "/me waves").is_empty());
    assert!(texts(&a).last().unwrap().contains("rooms only"));
    ctrl(&mut a, 'u');
    net(&mut a, pm("alice", "bob", "hi back"));
    let pms: Vec<_> =
        a.buffers[i].entries.iter().filter(|e| matches!(e.kind, Kind::Private { .. })).collect();
    assert_eq!(pms.len(), 2, "our copy goes to the same conversation");
    assert!(pms[1].own);
    let effects = enter(&mut a, "/part");
    assert!(effects.is_empty(), "closing a conversation is local");
    assert!(a.find("bob").is_none());
}

#[test]
fn remote_escape_sequences_are_stored_as_harmless_text() {
    let mut a = chatting(80, 24);
    net(&mut a, say("#lobby", 30, "eve", "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\nline two"));
    net(
        &mut a,
        ServerMsg::Topic { room: room("#lobby"), text: Some("\u{1b}[5mblink".into()), by: None },
    );
    let e = a.buffers[0].entries.iter().find(|e| e.text.contains("pwned")).unwrap();
    assert_eq!(e.text, "␛[2J␛]0;pwned␇\u{FFFD}31m\nline two");
    assert_eq!(a.buffers[0].topic.as_deref(), Some("␛[5mblink"));
    for b in &a.buffers {
        for e in &b.entries {
            assert!(!e.text.chars().any(|c| c.is_control() && c != '\n'), "{:?}", e.text);
        }
    }
}

#[test]
fn multi_line_paste_waits_for_enter() {
    let mut a = chatting(80, 24);
    let effects = a.update(Event::Term(TermEvent::Paste("first\r\nsecond\nthird\n".into())));
    assert!(effects.is_empty(), "a paste never sends by itself");
    assert_eq!(a.editor.text(), "first\nsecond\nthird");
    assert_eq!(a.editor.line_count(), 3);
    key_with(&mut a, KeyCode::Enter, KeyModifiers::ALT);
    type_str(&mut a, "fourth");
    let effects = key(&mut a, KeyCode::Enter);
    assert_eq!(
        sent(&effects),
        vec![ClientMsg::Say {
            cid: None,
            room: "#lobby".into(),
            text: "first\nsecond\nthird\nfourth".into()
        }]
    );
}

#[test]
fn scrolling_keeps_the_view_and_counts_new_lines_below() {
    let mut a = chatting(60, 12);
    for id in 100..140 {
        net(&mut a, say("#lobby", id, "bob", &format!("line {id}")));
    }
    key(&mut a, KeyCode::PageUp);
    let page = a.pane_size().1 as usize - 1;
    assert_eq!(a.buffers[0].scroll, page);
    net(&mut a, say("#lobby", 140, "bob", "new one"));
    assert_eq!(a.buffers[0].scroll, page + 1, "the view does not move");
    assert_eq!(a.buffers[0].below, 1);
    let wheel = |kind| {
        TermEvent::Mouse(MouseEvent { kind, column: 0, row: 0, modifiers: KeyModifiers::NONE })
    };
    a.update(Event::Term(wheel(MouseEventKind::ScrollUp)));
    assert_eq!(a.buffers[0].scroll, page + 4);
    for _ in 0..100 {
        key(&mut a, KeyCode::PageUp);
    }
    let top = a.buffers[0].scroll;
    assert!(top < 60, "scrolling stops at the top: {top}");
    a.update(Event::Term(wheel(MouseEventKind::ScrollDown)));
    assert_eq!(a.buffers[0].scroll, top - 3);
    for _ in 0..100 {
        key(&mut a, KeyCode::PageDown);
    }
    assert_eq!((a.buffers[0].scroll, a.buffers[0].below), (0, 0));
}

#[test]
fn resizing_to_nothing_and_back_is_fine() {
    let mut a = chatting(80, 24);
    for (w, h) in [(0, 0), (1, 1), (5, 2), (200, 60), (80, 24)] {
        a.update(Event::Term(TermEvent::Resize(w, h)));
        key(&mut a, KeyCode::PageUp);
        key(&mut a, KeyCode::PageDown);
    }
    assert_eq!(a.size, (80, 24));
}

#[test]
fn lost_connection_reconnects_with_backoff_and_keeps_input() {
    let mut a = chatting(80, 24);
    type_str(&mut a, "unsent words");
    let effects = lost(&mut a);
    assert_eq!(
        effects,
        vec![Effect::Connect { after: Duration::from_secs(1), nick: "alice".into(), server: 0 }]
    );
    assert!(matches!(a.conn, Conn::Reconnecting { attempt: 1, .. }));
    assert!(key(&mut a, KeyCode::Enter).is_empty(), "nothing is sent while offline");
    assert_eq!(a.editor.text(), "unsent words");

    let mut delays = vec![];
    for _ in 0..6 {
        let effects = a.update(Event::ConnectFailed { reason: "refused".into(), retry: true });
        match effects.as_slice() {
            [Effect::Connect { after, .. }] => delays.push(after.as_secs()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays, vec![2, 4, 8, 16, 30, 30]);

    a.update(Event::Connected(Box::new(welcome("alice"))));
    assert!(a.is_connected());
    assert_eq!(a.editor.text(), "unsent words");
    // The backoff starts again from 1 s.
    let effects = lost(&mut a);
    assert!(matches!(effects.as_slice(), [Effect::Connect { after, .. }] if after.as_secs() == 1));
}

#[test]
fn a_lost_connection_moves_to_the_next_server_and_backs_off_only_after_a_round() {
    let mut a = chatting(80, 24);
    a.config.servers = vec!["a:7000".into(), "b:7000".into(), "[::1]:7000".into()];
    let mut tried = vec![];
    let mut effects = lost(&mut a);
    for _ in 0..6 {
        match effects.as_slice() {
            [Effect::Connect { after, server, .. }] => tried.push((*server, after.as_secs())),
            other => panic!("{other:?}"),
        }
        effects = a.update(Event::ConnectFailed { reason: "refused".into(), retry: true });
    }
    // The others at once, the lost one last; a wait only before each new round.
    assert_eq!(tried, vec![(1, 0), (2, 0), (0, 0), (1, 1), (2, 0), (0, 0)]);
    let [Effect::Connect { server: 1, .. }] = effects.as_slice() else { panic!("{effects:?}") };
    let status = crate::ui::tests::screen(&a);
    assert!(status.contains("reconnecting to b:7000"), "{status}");

    let mut w = welcome("alice");
    w.server_fingerprint = chatao_proto::Fingerprint::parse(SERVER_FP).unwrap();
    a.update(Event::Connected(Box::new(w)));
    assert_eq!((a.on, a.server_name()), (1, "b:7000"));
    assert!(texts(&a).iter().any(|t| t == "reconnected to b:7000 as alice"), "{:?}", texts(&a));
    let status = crate::ui::tests::screen(&a);
    assert!(status.contains("b:7000 (2/3)"), "{status}");
    // Lost again: the next after b, at once.
    let effects = lost(&mut a);
    assert!(
        matches!(effects.as_slice(), [Effect::Connect { server: 2, after, .. }] if after.is_zero())
    );
}

#[test]
fn messages_not_acknowledged_are_sent_again_with_their_ids_after_the_catch_up() {
    let mut a = chatting(80, 24);
    alt(&mut a, '1');
    let mut typed = sent_with_ids(&enter(&mut a, "typed fast"));
    typed.extend(sent_with_ids(&enter(&mut a, "/msg bob and this")));
    let cids: Vec<_> = typed.iter().map(crate::core::cid_of).collect();
    assert!(cids.iter().all(Option::is_some), "{typed:?}");
    // Handed to the actor, perhaps written to the socket: nothing says they arrived.
    lost(&mut a);
    let effects = a.update(Event::Connected(Box::new(welcome("alice"))));
    let sent = sent_with_ids(&effects);
    assert!(matches!(sent.first(), Some(ClientMsg::History { .. })), "catch-up first: {sent:?}");
    assert_eq!(sent[sent.len() - 2..], typed[..], "then the same messages, same ids, in order");
    // Their echoes acknowledge them: a second reconnection does not send them again.
    let ServerMsg::Message { room, time, kind, .. } = say("#lobby", 4, "alice", "") else {
        unreachable!()
    };
    let from = crate::app::testing::nick("alice");
    let text = "typed fast".to_owned();
    net(
        &mut a,
        ServerMsg::Message {
            cid: cids[0],
            room,
            id: 4,
            time,
            from: from.clone(),
            kind,
            text,
            history: false,
        },
    );
    net(
        &mut a,
        ServerMsg::Private {
            cid: cids[1],
            id: 1,
            time,
            from,
            to: crate::app::testing::nick("bob"),
            kind,
            text: "and this".into(),
        },
    );
    assert!(a.core.all_acked());
    lost(&mut a);
    let effects = a.update(Event::Connected(Box::new(welcome("alice"))));
    assert!(!sent_with_ids(&effects).iter().any(|m| crate::core::cid_of(m).is_some()));
}

#[test]
fn messages_not_acknowledged_when_the_session_ends_for_good_are_named() {
    let mut a = chatting(80, 24);
    alt(&mut a, '1');
    enter(&mut a, "in flight");
    a.update(Event::Net(NetEvent::Closed(Closed::Bye {
        code: Some(ErrorCode::TooSlow),
        reason: "too slow".into(),
    })));
    let shown = texts(&a);
    assert!(shown.iter().any(|t| t == "disconnected: too slow"), "{shown:?}");
    let at = shown.iter().position(|t| t == "1 message(s) were not delivered:").unwrap();
    assert_eq!(shown[at + 1], "  #lobby: in flight");
}

#[test]
fn a_message_refused_for_good_is_shown_with_its_text() {
    let mut a = chatting(80, 24);
    alt(&mut a, '1');
    let typed = sent_with_ids(&enter(&mut a, "please deliver"));
    let cid = crate::core::cid_of(&typed[0]);
    net(
        &mut a,
        ServerMsg::Error {
            cid,
            code: ErrorCode::Muted,
            message: "you are muted".into(),
            room: None,
        },
    );
    let shown = texts(&a);
    assert!(
        shown.iter().any(|t| t == "not sent: #lobby: please deliver: you are muted: muted"),
        "{shown:?}"
    );
    assert!(a.core.all_acked(), "a final refusal is not sent again");
}

#[test]
fn reconnecting_catches_up_every_room_without_duplicates() {
    let mut a = chatting(80, 24);
    net(&mut a, say("#rust", 7, "bob", "rust seven"));
    enter(&mut a, "/join #empty");
    net(&mut a, joined("#empty", "alice"));
    alt(&mut a, '1');
    lost(&mut a);
    let effects = a.update(Event::Connected(Box::new(welcome("alice"))));
    assert_eq!(
        sent(&effects),
        vec![
            ClientMsg::History { room: "#lobby".into(), since: 3, limit: None, before: None },
            ClientMsg::Join { room: "#rust".into(), since: Some(7) },
            ClientMsg::Join { room: "#empty".into(), since: None },
        ]
    );
    // The server replays around the gap: seen ids are dropped, new ones count as unread.
    let replay = |id, text: &str| {
        let ServerMsg::Message { room, time, from, kind, .. } = say("#rust", id, "bob", "") else {
            unreachable!()
        };
        ServerMsg::Message {
            cid: None,
            room,
            id,
            time,
            from,
            kind,
            text: text.into(),
            history: true,
        }
    };
    net(&mut a, replay(6, "rust six"));
    net(&mut a, replay(7, "rust seven"));
    net(&mut a, replay(8, "rust eight"));
    net(&mut a, say("#rust", 9, "bob", "rust nine"));
    let rust: Vec<&str> = a.buffers[1]
        .entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Message { .. }))
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(rust, vec!["rust seven", "rust eight", "rust nine"]);
    assert_eq!(a.buffers[1].unread, 3, "rust seven arrived before, eight and nine since");
}

#[test]
fn history_on_a_first_join_is_not_unread() {
    let mut a = app(80, 24);
    net(&mut a, joined("#rust", "alice"));
    let ServerMsg::Message { room, id, time, from, kind, text, .. } = say("#rust", 1, "bob", "old")
    else {
        unreachable!()
    };
    net(&mut a, ServerMsg::Message { cid: None, room, id, time, from, kind, text, history: true });
    assert_eq!(a.buffers[1].unread, 0);
    assert!(a.buffers[1].entries.back().unwrap().history);
}

#[test]
fn a_bye_with_a_code_is_final_but_a_shutdown_is_retried() {
    let mut a = chatting(80, 24);
    let effects = a.update(Event::Net(NetEvent::Closed(Closed::Bye {
        code: Some(ErrorCode::Shutdown),
        reason: "restarting".into(),
    })));
    assert!(matches!(effects.as_slice(), [Effect::Connect { .. }]));

    let mut a = chatting(80, 24);
    let effects = a.update(Event::Net(NetEvent::Closed(Closed::Bye {
        code: Some(ErrorCode::Kicked),
        reason: "be nice".into(),
    })));
    assert!(effects.is_empty());
    assert!(matches!(&a.conn, Conn::Closed { reason } if reason.contains("be nice (kicked)")));
    type_str(&mut a, "still here");
    assert!(key(&mut a, KeyCode::Enter).is_empty());
    assert_eq!(a.editor.text(), "still here");
    assert_eq!(ctrl(&mut a, 'c'), vec![Effect::Quit]);

    let mut a = chatting(80, 24);
    lost(&mut a);
    let effects =
        a.update(Event::ConnectFailed { reason: "key changed\nline 2".into(), retry: false });
    assert!(effects.is_empty());
    assert!(matches!(a.conn, Conn::Closed { .. }));
}

#[test]
fn a_full_outbox_gives_the_text_back() {
    let mut a = chatting(80, 24);
    let effects = enter(&mut a, "important");
    let Effect::Send { restore, msg } = effects[0].clone() else { panic!() };
    a.update(Event::SendFailed { error: SendError::Full, restore, msg: Some(msg) });
    assert_eq!(a.editor.text(), "important");
    assert!(a.outbox_full);
    enter(&mut a, "");
    assert!(!a.outbox_full, "the next attempt clears the flag");
}

#[test]
fn quit_waits_for_the_goodbye_but_not_forever() {
    let mut a = chatting(80, 24);
    let effects = enter(&mut a, "/quit gone fishing");
    assert_eq!(sent(&effects), vec![ClientMsg::Quit { reason: Some("gone fishing".into()) }]);
    assert!(advance(&mut a, Duration::from_secs(1)).is_empty());
    let bye = Closed::Bye { code: None, reason: "goodbye".into() };
    assert_eq!(a.update(Event::Net(NetEvent::Closed(bye))), vec![Effect::Quit]);

    let mut a = chatting(80, 24);
    ctrl(&mut a, 'c');
    assert_eq!(advance(&mut a, QUIT_TIMEOUT), vec![Effect::Quit]);
    let mut a = chatting(80, 24);
    ctrl(&mut a, 'c');
    assert_eq!(ctrl(&mut a, 'c'), vec![Effect::Quit], "a second Ctrl-C leaves at once");
}

#[test]
fn leaving_rooms_and_nick_changes() {
    let mut a = chatting(80, 24);
    alt(&mut a, '2');
    let effects = enter(&mut a, "/part");
    assert_eq!(sent(&effects), vec![ClientMsg::Part { room: "#rust".into(), reason: None }]);
    net(
        &mut a,
        ServerMsg::Leave {
            room: room("#rust"),
            nick: nick("alice"),
            reason: chatao_proto::LeaveReason::Part,
            message: None,
        },
    );
    assert_eq!(a.buffers.len(), 1);
    assert_eq!(a.current, 0);
    net(
        &mut a,
        ServerMsg::Leave {
            room: room("#lobby"),
            nick: nick("alice"),
            reason: chatao_proto::LeaveReason::Part,
            message: None,
        },
    );
    assert_eq!(a.buffers.len(), 1, "the last room stays open");
    assert!(!a.buffers[0].joined);

    let mut a = chatting(80, 24);
    net(&mut a, ServerMsg::NickChange { old: nick("alice"), new: nick("alicia") });
    assert_eq!(a.me.as_str(), "alicia");
    assert!(a.buffers[0].has_member(&nick("alicia")));
    net(&mut a, ServerMsg::NickChange { old: nick("bob"), new: nick("robert") });
    assert!(a.buffers[1].has_member(&nick("robert")));
    assert!(texts(&a).last().unwrap().contains("bob is now known as robert"));
    lost(&mut a);
    let effects = a.update(Event::ConnectFailed { reason: "x".into(), retry: true });
    assert!(matches!(&effects[0], Effect::Connect { nick, .. } if nick == "alicia"));
}

#[test]
fn help_lists_commands_and_keys_offline_too() {
    let mut a = chatting(80, 24);
    lost(&mut a);
    enter(&mut a, "/help");
    let t = texts(&a);
    assert!(t.iter().any(|l| l.contains("/join #ROOM")));
    assert!(t.iter().any(|l| l.contains("Alt-1..9")));
    assert!(a.editor.is_empty());
}

#[test]
fn mention_matching() {
    assert!(mentions("hey alice!", "alice"));
    assert!(mentions("ALICE: hi", "alice"));
    assert!(mentions("alice", "alice"));
    assert!(!mentions("malice", "alice"));
    assert!(!mentions("alice_2 hi", "alice"));
    assert!(!mentions("x-alice? no", "alice"));
    let server = chatao_proto::Fingerprint::parse(SERVER_FP).unwrap();
    assert_eq!(server.short(), "SHA256:Xk3v9QaB");
}

#[test]
fn e2e_commands_become_requests_and_messages_for_the_current_room() {
    let mut a = chatting(80, 24);
    let effects = enter(&mut a, "/create --e2e #sec");
    assert_eq!(
        sent(&effects),
        vec![ClientMsg::Create { room: "#sec".into(), e2e: true, open: false }]
    );
    net(&mut a, joined("#sec", "alice"));
    let i = a.buffers.iter().position(|b| b.target.name() == "#sec").unwrap();
    a.switch_to(i);
    let effects = enter(&mut a, "/invite bob");
    assert_eq!(
        sent(&effects),
        vec![ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#sec".into()) }]
    );
    assert_eq!(
        enter(&mut a, "/remove bob"),
        vec![Effect::Request(crate::e2e::Request::Remove {
            room: "#sec".into(),
            nick: "bob".into()
        })]
    );
    assert_eq!(
        enter(&mut a, "/safety"),
        vec![Effect::Request(crate::e2e::Request::Safety { room: "#sec".into() })]
    );
    assert_eq!(a.editor.text(), "", "the input line was handed over");
}

/// Issue 20: a private message sent from another device of ours arrives as our own (a copy
/// with a client id this client never sent): shown in the conversation as ours, and not
/// echoed where we are typing as if it were typed here.
#[test]
fn a_private_message_from_another_device_of_ours_shows_only_in_the_conversation() {
    let mut a = chatting(80, 24);
    let before = a.current_buffer().entries.len();
    let mut copy = pm("alice", "bob", "typed on my phone");
    if let ServerMsg::Private { cid, .. } = &mut copy {
        *cid = Some(424_242);
    }
    net(&mut a, copy);
    assert_eq!(a.current, 0, "the room stays shown");
    assert_eq!(a.current_buffer().entries.len(), before, "nothing echoed in the room");
    let i = a.find("bob").unwrap();
    let entry = a.buffers[i].entries.back().unwrap();
    assert!(entry.own && entry.text == "typed on my phone", "{entry:?}");
    assert!(a.buffers[i].unseen);
}

fn leave(r: &str, who: &str) -> ServerMsg {
    ServerMsg::Leave {
        room: room(r),
        nick: nick(who),
        reason: chatao_proto::LeaveReason::Part,
        message: None,
    }
}

fn pm(from: &str, to: &str, text: &str) -> ServerMsg {
    ServerMsg::Private {
        cid: None,
        id: 1,
        time: T0,
        from: nick(from),
        to: nick(to),
        kind: MessageKind::Normal,
        text: text.into(),
    }
}

/// Issue 16, item 2: `/who #room-you-are-not-in` opened a hidden buffer for that room (in the
/// Ctrl-N rotation, where typing gave `not_in_room`, and where `/part #lobby` then dropped
/// you).
#[test]
fn who_answers_in_the_buffer_shown_and_opens_no_buffer_for_a_room_we_are_not_in() {
    let mut a = chatting(80, 24);
    let effects = enter(&mut a, "/who #elsewhere");
    assert_eq!(sent(&effects), vec![ClientMsg::Who { room: "#elsewhere".into(), after: None }]);
    net(&mut a, members("#elsewhere", &["eve", "dave"]));
    assert_eq!(a.buffers.len(), 2, "no buffer for a room we are not in");
    assert!(a.find("#elsewhere").is_none());
    assert_eq!(a.current, 0);
    assert_eq!(texts(&a).last().unwrap(), "#elsewhere: 2 members: dave, eve");
    ctrl(&mut a, 'n');
    ctrl(&mut a, 'n');
    assert_eq!(a.current, 0, "Ctrl-N goes round #lobby and #rust only");

    // Of a room we are in, from another: the answer here, the list there brought up to date.
    enter(&mut a, "/who rust");
    net(&mut a, members("#rust", &["alice", "bob", "carol"]));
    assert_eq!(texts(&a).last().unwrap(), "#rust: 3 members: alice, bob, carol");
    assert!(a.buffers[1].has_member(&nick("carol")));

    // Parting lands in a room we are in, not in the one asked about.
    enter(&mut a, "/part #lobby");
    net(&mut a, leave("#lobby", "alice"));
    assert_eq!(a.buffers.len(), 1);
    assert_eq!(a.current_buffer().target.name(), "#rust");

    // A join's member list still opens the room's buffer, even after a /who of it.
    enter(&mut a, "/who #go");
    enter(&mut a, "/join #go");
    net(&mut a, members("#go", &["alice", "gopher"]));
    net(&mut a, joined("#go", "alice"));
    assert_eq!(a.current_buffer().target.name(), "#go");
    assert!(a.current_buffer().has_member(&nick("gopher")));
}

/// Issue 16, item 10: `/who #nosuch` printed `#nosuch:  (0 online)`. The server answers an
/// empty list for a room that does not exist (a plain room exists while someone is in it).
#[test]
fn who_of_a_room_nobody_is_in_says_there_is_no_such_room() {
    let mut a = chatting(80, 24);
    enter(&mut a, "/who #nosuch");
    net(&mut a, members("#nosuch", &[]));
    assert_eq!(texts(&a).last().unwrap(), "no such room #nosuch: nobody is in it");
    assert!(a.find("#nosuch").is_none());
    enter(&mut a, "/who #sec");
    net(
        &mut a,
        ServerMsg::Members {
            room: room("#sec"),
            members: vec![],
            e2e: true,
            total: None,
            next: None,
            more: false,
        },
    );
    assert_eq!(
        texts(&a).last().unwrap(),
        "[E2E] #sec: nobody is online in this end-to-end encrypted room"
    );
}

/// Issue 16, item 5: `ca` Tab gave `carol: `, and Tab again `carol: bob`.
#[test]
fn tab_again_cycles_the_matches_of_the_first_word_in_place() {
    let mut a = chatting(80, 24);
    net(&mut a, members("#lobby", &["alice", "bob", "carol", "carla"]));
    type_str(&mut a, "ca");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "carla: ");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "carol: ");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "carla: ");
    key(&mut a, KeyCode::BackTab);
    assert_eq!(a.editor.text(), "carol: ");
    type_str(&mut a, "hi");
    assert_eq!(a.editor.text(), "carol: hi", "another key ends the cycle");
    ctrl(&mut a, 'u');

    // One match: Tab again leaves it as it is.
    type_str(&mut a, "b");
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "bob: ");
    key(&mut a, KeyCode::BackTab);
    assert_eq!(a.editor.text(), "bob: ");
    ctrl(&mut a, 'u');
    type_str(&mut a, "/jo");
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "/join ");
    // After another key, Tab completes the next word.
    type_str(&mut a, "ru");
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.editor.text(), "/join #rust ");
}

/// Issue 16, item 6: `/msg NICK text` from a room gave no feedback: the conversation was
/// opened but not shown, and nothing was echoed where it was typed.
#[test]
fn msg_from_a_room_is_echoed_there_and_marks_the_conversation() {
    let mut a = chatting(80, 24);
    let effects = enter(&mut a, "/msg bob see you at noon");
    assert_eq!(
        sent(&effects),
        vec![ClientMsg::Msg { cid: None, to: "bob".into(), text: "see you at noon".into() }]
    );
    net(&mut a, pm("alice", "bob", "see you at noon"));
    assert_eq!(a.current, 0, "the room stays shown");
    let echo = a.current_buffer().entries.back().unwrap();
    assert_eq!(echo.kind, Kind::Sent { to: nick("bob"), action: false });
    assert_eq!(echo.text, "see you at noon");
    let i = a.find("bob").unwrap();
    assert!(a.buffers[i].unseen && a.buffers[i].has_activity());
    assert_eq!((a.buffers[i].unread, a.buffers[i].mentioned), (0, false), "ours: no count");
    alt(&mut a, 'a');
    assert_eq!(a.current, i, "Alt-A finds it");
    assert!(!a.buffers[i].unseen);
    // Typed in the conversation itself: no echo anywhere else.
    let lobby = a.buffers[0].entries.len();
    enter(&mut a, "and bring the logs");
    net(&mut a, pm("alice", "bob", "and bring the logs"));
    assert_eq!(a.buffers[0].entries.len(), lobby);
    assert!(!a.buffers[i].unseen);
}

/// Issue 16, item 6: `/query NICK [TEXT]` opens the conversation and shows it.
#[test]
fn query_opens_and_shows_a_conversation() {
    let mut a = chatting(80, 24);
    let effects = enter(&mut a, "/query carol");
    assert!(effects.is_empty(), "opening is local");
    assert_eq!(a.current_buffer().target, Target::Query(nick("carol")));
    assert!(a.editor.is_empty());
    let effects = enter(&mut a, "hello");
    assert_eq!(
        sent(&effects),
        vec![ClientMsg::Msg { cid: None, to: "carol".into(), text: "hello".into() }]
    );
    alt(&mut a, '1');
    let effects = enter(&mut a, "/query Dave are you there?");
    assert_eq!(
        sent(&effects),
        vec![ClientMsg::Msg { cid: None, to: "Dave".into(), text: "are you there?".into() }]
    );
    assert_eq!(a.current_buffer().target.name(), "Dave");
    // The server's copy, in its spelling, lands in the same conversation, shown.
    net(&mut a, pm("alice", "dave", "are you there?"));
    assert_eq!(a.current_buffer().target, Target::Query(nick("dave")));
    assert_eq!(a.buffers.len(), 4);
    assert!(!a.current_buffer().unseen);
    alt(&mut a, '1');
    enter(&mut a, "/query carol");
    assert_eq!(a.current, 2, "an open conversation is shown, not opened twice");
    assert!(enter(&mut a, "/query élodie").is_empty());
    assert!(texts(&a).last().unwrap().contains("is not a nickname"));
    ctrl(&mut a, 'u');
    enter(&mut a, "/help");
    assert!(texts(&a).iter().any(|l| l.contains("/query NICK [TEXT]")));
}

/// Issue 16, item 10: while scrolled up, a line after a day change (one more row, its
/// day-change line) does not move the view.
#[test]
fn a_day_change_line_is_counted_while_scrolled_up() {
    let mut a = chatting(60, 12);
    for id in 100..140 {
        net(&mut a, say("#lobby", id, "bob", &format!("line {id}")));
    }
    key(&mut a, KeyCode::PageUp);
    let before = a.buffers[0].scroll;
    // Lines 100.. reach past midnight (T0 + 139 minutes); two days on is another day.
    let next_day = T0 + 2 * 86_400_000;
    let ServerMsg::Message { room, id, from, kind, text, history, .. } =
        say("#lobby", 140, "bob", "tomorrow")
    else {
        unreachable!()
    };
    net(
        &mut a,
        ServerMsg::Message { cid: None, room, id, time: next_day, from, kind, text, history },
    );
    assert_eq!(a.buffers[0].scroll, before + 2, "the line and its day-change line");
}

/// Issue 15, item 18: a hostile server floods huge messages into a room and into many
/// conversations. Each entry keeps at most its limit, each buffer stays within its bytes, all
/// of them within the client's total, and a buffer that lost old messages says so.
#[test]
fn a_flood_of_huge_messages_stays_within_the_byte_limits() {
    use super::limits::{BUFFER_BYTES, MAX_ENTRY_BYTES, TOTAL_BYTES};
    let mut a = app(80, 24);
    net(&mut a, joined("#lobby", "alice"));
    let huge = "z".repeat(256 * 1024);
    for id in 1..=100 {
        net(&mut a, say("#lobby", id, "mallory", &huge));
        assert!(a.buffers[0].bytes <= BUFFER_BYTES, "{} bytes after {id}", a.buffers[0].bytes);
    }
    let lobby = &a.buffers[0];
    assert!(lobby.dropped > 0, "old messages were dropped");
    assert!(lobby.entries.iter().all(|e| e.text.len() <= MAX_ENTRY_BYTES));
    assert!(lobby.entries.back().unwrap().omitted.is_some(), "the cut is recorded");
    for id in 101..=800 {
        let from = format!("mallory{}", id % 20);
        net(&mut a, private(id, &from, "alice", &huge));
        assert!(a.scrollback_bytes() <= TOTAL_BYTES, "{} bytes after {id}", a.scrollback_bytes());
    }
    assert_eq!(a.buffers.len(), 21);
    for b in &a.buffers {
        assert!(b.bytes <= BUFFER_BYTES, "{}: {} bytes", b.target.name(), b.bytes);
        assert_eq!(b.bytes, b.entries.iter().map(|e| e.cost()).sum::<usize>());
    }
    // 700 entries of 64 KiB (44 MiB) cannot all stay: the largest buffers gave up their oldest.
    let dropped: u64 = a.buffers[1..].iter().map(|b| b.dropped).sum();
    assert!(dropped > 0, "the total limit dropped conversations' oldest messages");
    assert!(a.scrollback_bytes() > TOTAL_BYTES / 2, "but only what it had to");
    // What was dropped is said at the top of the buffer, what was cut after its entry.
    a.switch_to(0);
    a.scroll(1 << 40);
    let screen = crate::ui::tests::screen(&a);
    let marker = format!("-- {} older messages dropped (memory limit) --", a.buffers[0].dropped);
    assert!(screen.contains(&marker), "{screen}");
    a.scroll(-(1 << 40));
    let screen = crate::ui::tests::screen(&a);
    assert!(screen.contains("… 192.0 KiB more not kept (client limit)"), "{screen}");
}

/// Issue 15, item 18: a hostile server opening thousands of private conversations cannot open
/// thousands of buffers: past the limit the least recently active one is closed, and the buffer
/// shown says so.
#[test]
fn conversations_past_the_limit_close_the_least_recently_active_buffer() {
    use super::limits::MAX_BUFFERS;
    let mut a = app(80, 24);
    net(&mut a, joined("#lobby", "alice"));
    for id in 1..=2000 {
        net(&mut a, private(id, &format!("m{id}"), "alice", "hi"));
        assert!(a.buffers.len() <= MAX_BUFFERS);
    }
    assert_eq!(a.buffers.len(), MAX_BUFFERS);
    assert_eq!(a.current_buffer().target, Target::Room(room("#lobby")), "the room stays shown");
    assert!(a.find("m2000").is_some() && a.find("m1").is_none());
    let texts = texts(&a);
    let closed = format!("closed m{}: too many buffers open (limit {MAX_BUFFERS})", 2000 - 255);
    assert!(texts.contains(&closed), "{:?}", &texts[texts.len() - 3..]);
    // The oldest conversation that speaks again opens again.
    net(&mut a, private(2001, "m1", "alice", "me again"));
    assert!(a.find("m1").is_some());
}

/// Issue 15, item 18: a topic and away reasons of 4 MiB keep what the protocol allows
/// (300 bytes), and member lists over all rooms stay within their total: the least recently
/// active room's list goes first, and that room says so.
#[test]
fn topics_away_reasons_and_member_lists_are_bounded() {
    use super::limits::{MAX_MEMBERS, MAX_REASON_BYTES, TOTAL_MEMBERS};
    let mut a = app(80, 24);
    net(&mut a, joined("#lobby", "alice"));
    let huge = "t".repeat(4 * 1024 * 1024);
    net(&mut a, ServerMsg::Topic { room: room("#lobby"), text: Some(huge.clone()), by: None });
    let topic = a.buffers[0].topic.clone().unwrap();
    assert_eq!(topic, format!("{}…", &huge[..MAX_REASON_BYTES]));
    net(&mut a, members("#lobby", &["alice", "bob"]));
    net(&mut a, ServerMsg::Away { nick: nick("bob"), reason: Some(huge.clone()) });
    let bob = &a.buffers[0].members[&nick("bob").folded()];
    assert_eq!(bob.away.as_ref().unwrap().len(), MAX_REASON_BYTES + '…'.len_utf8());

    // Five rooms of MAX_MEMBERS each: more than the total.
    let rooms = TOTAL_MEMBERS / MAX_MEMBERS + 1;
    for r in 0..rooms {
        let name = format!("#r{r}");
        net(&mut a, joined(&name, "alice"));
        let nicks: Vec<String> = (0..MAX_MEMBERS).map(|n| format!("u{r}x{n}")).collect();
        let refs: Vec<&str> = nicks.iter().map(String::as_str).collect();
        net(&mut a, members(&name, &refs));
        let listed: usize = a.buffers.iter().map(|b| b.members.len()).sum();
        assert!(listed <= TOTAL_MEMBERS, "{listed} members listed after {name}");
    }
    // #lobby (shown) keeps its list; the oldest rooms lost theirs, and say so.
    assert_eq!(a.buffers[0].members.len(), 2);
    let first = a.find("#r0").unwrap();
    assert!(a.buffers[first].members.is_empty());
    let said = a.buffers[first].entries.back().unwrap().text.clone();
    assert_eq!(said, "member list of #r0 not kept (memory limit); /who #r0 lists it");
    let last = a.find(&format!("#r{}", rooms - 1)).unwrap();
    assert_eq!(a.buffers[last].members.len(), MAX_MEMBERS);
}

/// Issue 15, item 18: room lists sent again and again cannot grow what completion remembers
/// past its bound.
#[test]
fn room_names_remembered_for_completion_are_bounded() {
    use super::limits::KNOWN_ROOMS;
    let mut a = app(80, 24);
    for page in 0..3 {
        let rooms = (0..KNOWN_ROOMS / 2)
            .map(|n| chatao_proto::RoomInfo {
                room: room(&format!("#p{page}r{n}")),
                members: 1,
                topic: None,
                e2e: false,
            })
            .collect();
        net(&mut a, ServerMsg::RoomList { rooms, next: None });
    }
    assert_eq!(a.known_rooms.len(), KNOWN_ROOMS);
    assert!(a.known_rooms.contains("#p0r0") && !a.known_rooms.contains("#p2r0"));
}

/// Issue 19: when the server did not put us in `#lobby` (`--rooms`, or a key that parted it),
/// the UI opens on the first room it joins, not on a `#lobby` it is not in.
#[test]
fn without_the_lobby_the_ui_opens_on_the_first_room_it_joins() {
    let mut w = welcome("alice");
    w.rooms = vec![room("#ci"), room("#deploys")];
    w.fixed_rooms = true;
    let mut a = App::new(config(), &w, (80, 12), Instant::now(), T0);
    fn names(a: &App) -> Vec<String> {
        a.buffers.iter().map(|b| b.target.name().to_string()).collect()
    }
    assert_eq!(names(&a), ["#ci"]);
    net(&mut a, members("#deploys", &["alice"]));
    net(&mut a, members("#ci", &["alice", "bob"]));
    assert!(!names(&a).iter().any(|n| n == "#lobby"), "{:?}", names(&a));
    assert_eq!(a.current_buffer().target.name(), "#ci");
    // A key that parted the lobby, not fixed: the same.
    let mut w = welcome("alice");
    w.rooms = vec![room("#rust")];
    let a = App::new(config(), &w, (80, 12), Instant::now(), T0);
    assert_eq!(names(&a), ["#rust"]);
    // The server put us in the lobby (it is listed, or nothing is): the lobby.
    w.rooms = vec![room("#rust"), room("#lobby")];
    let a = App::new(config(), &w, (80, 12), Instant::now(), T0);
    assert_eq!(names(&a), ["#lobby"]);
    assert_eq!(names(&app(80, 12)), ["#lobby"]);
}
