//! The screen in its main states, drawn with ratatui's `TestBackend` and compared with insta
//! snapshots (in `snapshots/`; review changes with `cargo insta review`). Times are fixed and
//! shown in UTC, so the snapshots are the same on every machine. Styles, which snapshots do
//! not show, are checked cell by cell where they carry meaning.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chatao_proto::{LeaveReason, Member, MessageKind, ServerMsg};
use crossterm::event::{Event as TermEvent, KeyCode};
use ratatui::Terminal;
use ratatui::backend::{Backend, TestBackend};
use ratatui::buffer::Buffer as Cells;
use ratatui::style::Color;

use super::render;
use crate::app::testing::*;
use crate::app::{App, Event};
use crate::net::{Closed, NetEvent};

fn draw(app: &App) -> Terminal<TestBackend> {
    let (w, h) = app.size;
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| {
        render(app, f);
    })
    .unwrap();
    t
}

pub(crate) fn screen(app: &App) -> String {
    draw(app).backend().to_string()
}

pub(crate) fn cells(app: &App) -> Cells {
    draw(app).backend().buffer().clone()
}

/// The position of the first cell of the first occurrence of `needle` on screen.
pub(crate) fn find(cells: &Cells, needle: &str) -> (u16, u16) {
    let area = cells.area;
    for y in 0..area.height {
        let row: String = (0..area.width).map(|x| cells[(x, y)].symbol()).collect();
        if let Some(i) = row.find(needle) {
            let x = row[..i].chars().count() as u16;
            return (x, y);
        }
    }
    panic!("{needle:?} not on screen");
}

fn action(r: &str, id: u64, from: &str, text: &str) -> ServerMsg {
    let ServerMsg::Message { room, time, from, .. } = say(r, id, from, "") else { unreachable!() };
    ServerMsg::Message {
        cid: None,
        room,
        id,
        time,
        from,
        kind: MessageKind::Action,
        text: text.into(),
        history: false,
    }
}

/// A message replayed from history, an hour before [`T0`].
fn history(r: &str, id: u64, from: &str, text: &str) -> ServerMsg {
    let ServerMsg::Message { room, from, kind, .. } = say(r, id, from, "") else { unreachable!() };
    let time = T0 - 3_600_000;
    ServerMsg::Message { cid: None, room, id, time, from, kind, text: text.into(), history: true }
}

/// The chatting state: history, live messages, an action, a mention, joins and departures,
/// activity in another room and a private message waiting.
fn busy(width: u16, height: u16) -> App {
    let mut a = app(width, height);
    net(&mut a, joined("#lobby", "alice"));
    net(&mut a, members("#lobby", &["alice", "bob", "carol", "dave"]));
    net(
        &mut a,
        ServerMsg::Topic {
            room: room("#lobby"),
            text: Some("Welcome to Chatao! Be kind.".into()),
            by: None,
        },
    );
    net(&mut a, history("#lobby", 1, "dave", "yesterday's last word"));
    net(&mut a, ServerMsg::HistoryEnd { room: room("#lobby"), count: 1, before: None });
    net(&mut a, say("#lobby", 2, "bob", "morning all"));
    net(
        &mut a,
        say(
            "#lobby",
            3,
            "carol",
            "hi bob! did anyone try the new release? the wrapping of long lines is much better now",
        ),
    );
    net(&mut a, action("#lobby", 4, "bob", "waves at carol"));
    net(&mut a, say("#lobby", 5, "alice", "yes, works fine here 👍 世界"));
    net(&mut a, say("#lobby", 6, "bob", "alice: can you check the logs?"));
    advance(&mut a, Duration::from_secs(7 * 60));
    net(&mut a, joined("#lobby", "eve"));
    net(
        &mut a,
        ServerMsg::Leave {
            room: room("#lobby"),
            nick: nick("dave"),
            reason: LeaveReason::Quit,
            message: Some("see you".into()),
        },
    );
    enter(&mut a, "/join #rust");
    net(&mut a, joined("#rust", "alice"));
    net(&mut a, members("#rust", &["alice", "bob"]));
    alt(&mut a, '1');
    net(&mut a, say("#rust", 1, "bob", "new crate out"));
    net(&mut a, say("#rust", 2, "bob", "and another"));
    net(
        &mut a,
        ServerMsg::Private {
            cid: None,
            id: 1,
            time: T0 + 7 * 60_000,
            from: nick("carol"),
            to: nick("alice"),
            kind: MessageKind::Normal,
            text: "got a minute?".into(),
        },
    );
    type_str(&mut a, "sounds good, I'll have a look");
    a
}

#[test]
fn chatting() {
    let a = busy(100, 22);
    insta::assert_snapshot!("chatting", screen(&a));
    let c = cells(&a);
    // The mention's prefix is highlighted; history is greyed; an action is in italics.
    let (x, y) = find(&c, "bob │ alice: can you");
    assert_eq!(c[(x, y)].bg, Color::Yellow);
    let (x, y) = find(&c, "yesterday");
    assert_eq!(c[(x, y)].fg, Color::Gray);
    let (x, y) = find(&c, "3:carol(1!)");
    assert_eq!(c[(x, y)].bg, Color::Yellow, "a private message is marked like a mention");
    // The cursor is at the end of the input.
    let mut t = draw(&a);
    let pos = t.backend_mut().get_cursor_position().unwrap();
    assert_eq!((pos.x, pos.y), ("[alice] sounds good, I'll have a look".len() as u16, 21));
}

#[test]
fn private_conversation() {
    let mut a = busy(80, 12);
    alt(&mut a, '3');
    ctrl(&mut a, 'u');
    net(
        &mut a,
        ServerMsg::Private {
            cid: None,
            id: 2,
            time: T0 + 8 * 60_000,
            from: nick("alice"),
            to: nick("carol"),
            kind: MessageKind::Normal,
            text: "sure, what's up?".into(),
        },
    );
    insta::assert_snapshot!("private_conversation", screen(&a));
    let c = cells(&a);
    let (x, y) = find(&c, "*carol*");
    assert_eq!(c[(x, y)].fg, Color::Magenta);
}

#[test]
fn scrolled_back_with_new_messages_below() {
    let mut a = busy(70, 14);
    ctrl(&mut a, 'u');
    for id in 10..40 {
        net(
            &mut a,
            say(
                "#lobby",
                id,
                if id % 2 == 0 { "bob" } else { "carol" },
                &format!("message number {id}"),
            ),
        );
    }
    key(&mut a, KeyCode::PageUp);
    key(&mut a, KeyCode::PageUp);
    net(&mut a, say("#lobby", 40, "bob", "are you there?"));
    net(&mut a, say("#lobby", 41, "bob", "hello?"));
    insta::assert_snapshot!("scrolled_back", screen(&a));
}

#[test]
fn member_list_with_away_members_and_overflow() {
    let mut a = app(60, 10);
    net(&mut a, joined("#lobby", "alice"));
    let names = ["alice", "bob", "carol", "dave", "eve", "frank", "grace", "heidi", "ivan", "judy"];
    let list = names
        .iter()
        .map(|n| Member {
            nick: nick(n),
            fingerprint: chatao_proto::Fingerprint::example("x"),
            away: (*n == "bob").then(|| "lunch".into()),
            bot: false,
            op: false,
        })
        .collect();
    net(
        &mut a,
        ServerMsg::Members {
            room: room("#lobby"),
            members: list,
            e2e: false,
            total: None,
            next: None,
            more: false,
        },
    );
    insta::assert_snapshot!("member_list", screen(&a));
    let c = cells(&a);
    let (x, y) = find(&c, "bob ");
    assert_eq!(c[(x, y)].fg, Color::DarkGray, "away members are dimmed");
    key(&mut a, KeyCode::F(2));
    insta::assert_snapshot!("member_list_hidden", screen(&a));
}

/// Issue 22: a bot (a quiet session, marked `bot` by the server) is listed with a dim
/// `[bot]` after its name, as line mode's `/who` shows it; the list is wide enough for it.
#[test]
fn member_list_marks_bots() {
    let mut a = app(60, 8);
    net(&mut a, joined("#lobby", "alice"));
    let list = [("alice", false), ("ci-notifier", true), ("bob", false)]
        .iter()
        .map(|(n, bot)| Member {
            nick: nick(n),
            fingerprint: chatao_proto::Fingerprint::example("x"),
            away: None,
            bot: *bot,
            op: false,
        })
        .collect();
    net(
        &mut a,
        ServerMsg::Members {
            room: room("#lobby"),
            members: list,
            e2e: false,
            total: None,
            next: None,
            more: false,
        },
    );
    insta::assert_snapshot!("member_list_bots", screen(&a));
    let c = cells(&a);
    let (x, y) = find(&c, "ci-notifier [bot]");
    let mark = x + "ci-notifier ".len() as u16;
    assert_eq!(c[(mark, y)].fg, Color::DarkGray, "the mark is dimmed");
    assert_ne!(c[(x, y)].fg, Color::DarkGray, "the name keeps its colour");
    let list = |y: u16| -> String { (x..c.area.width).map(|x| c[(x, y)].symbol()).collect() };
    assert_eq!((list(1).trim(), list(2).trim()), ("alice", "bob"), "only the bot is marked");
}

/// Issue 19: a room operator (marked `op` by the server) is listed as `@nick`; a deop in the
/// room takes the mark away, an op gives it.
#[test]
fn member_list_marks_room_operators() {
    let mut a = app(60, 8);
    net(&mut a, joined("#lobby", "alice"));
    let list = [("alice", true), ("bob", false)]
        .iter()
        .map(|(n, op)| Member {
            nick: nick(n),
            fingerprint: chatao_proto::Fingerprint::example("x"),
            away: None,
            bot: false,
            op: *op,
        })
        .collect();
    let members = ServerMsg::Members {
        room: room("#lobby"),
        members: list,
        e2e: false,
        total: None,
        next: None,
        more: false,
    };
    net(&mut a, members);
    let c = cells(&a);
    let (x, y) = find(&c, "@alice");
    let row = |y: u16| -> String { (x..c.area.width).map(|x| c[(x, y)].symbol()).collect() };
    assert_eq!((row(y).trim(), row(y + 1).trim()), ("@alice", "bob"));
    let moderation = |action, target: &str| ServerMsg::RoomModeration {
        room: room("#lobby"),
        action,
        target: Some(target.into()),
        by: nick("alice"),
        reason: None,
        until: None,
    };
    net(&mut a, moderation(chatao_proto::RoomAction::Op, "bob"));
    net(&mut a, moderation(chatao_proto::RoomAction::Deop, "alice"));
    let c = cells(&a);
    let (x, y) = find(&c, "@bob");
    let row = |y: u16| -> String { (x..c.area.width).map(|x| c[(x, y)].symbol()).collect() };
    assert_eq!((row(y - 1).trim(), row(y).trim()), ("alice", "@bob"));
}

#[test]
fn reconnecting_keeps_the_input() {
    let mut a = busy(80, 14);
    a.update(Event::Net(NetEvent::Closed(Closed::Lost("connection lost: reset by peer".into()))));
    a.update(Event::ConnectFailed { reason: "cannot connect".into(), retry: true });
    a.update(Event::ConnectFailed { reason: "cannot connect".into(), retry: true });
    insta::assert_snapshot!("reconnecting", screen(&a));
    // The countdown follows the clock.
    advance(&mut a, Duration::from_millis(2500));
    assert!(screen(&a).contains("reconnecting in 2s (attempt 3)"));
    advance(&mut a, Duration::from_secs(2));
    assert!(screen(&a).contains("reconnecting... "));
}

#[test]
fn a_full_outbox_shows_and_the_text_comes_back() {
    let mut a = busy(80, 8);
    let effects = key(&mut a, KeyCode::Enter);
    let crate::app::Effect::Send { restore, msg } = effects[0].clone() else { panic!() };
    a.update(Event::SendFailed { error: crate::net::SendError::Full, restore, msg: Some(msg) });
    let s = screen(&a);
    assert!(s.contains("│ outbox full │"), "{s}");
    assert!(s.contains("[alice] sounds good, I'll have a look"), "{s}");
}

#[test]
fn disconnected_for_good() {
    let mut a = busy(80, 10);
    a.update(Event::Net(NetEvent::Closed(Closed::Bye {
        code: Some(chatao_proto::ErrorCode::Kicked),
        reason: "spamming".into(),
    })));
    insta::assert_snapshot!("disconnected", screen(&a));
}

#[test]
fn narrow_terminal() {
    let a = busy(24, 8);
    insta::assert_snapshot!("narrow", screen(&a));
    let tiny = busy(8, 2);
    insta::assert_snapshot!("tiny", screen(&tiny));
}

#[test]
fn every_small_size_renders_without_panicking() {
    let mut a = busy(1, 1);
    a.update(Event::Term(TermEvent::Paste("one\ntwo".into())));
    for w in 0..=40 {
        for h in 0..=12 {
            a.update(Event::Term(TermEvent::Resize(w, h)));
            key(&mut a, KeyCode::PageUp);
            // TestBackend cannot print a zero-width buffer; drawing is what is tested.
            let _ = draw(&a);
        }
    }
}

#[test]
fn multi_line_and_long_input() {
    let mut a = busy(50, 8);
    ctrl(&mut a, 'u');
    a.update(Event::Term(TermEvent::Paste("first line\nsecond line\nthird".into())));
    insta::assert_snapshot!("multi_line_input", screen(&a));
    ctrl(&mut a, 'u');
    ctrl(&mut a, 'u');
    type_str(&mut a, &"0123456789".repeat(8));
    let mut t = draw(&a);
    let s = t.backend().to_string();
    let last = s.lines().last().unwrap();
    assert!(last.ends_with("6789 \""), "the end of the text is in view: {last}");
    let pos = t.backend_mut().get_cursor_position().unwrap();
    assert_eq!((pos.x, pos.y), (49, 7), "the cursor stays on screen");
}

#[test]
fn remote_escape_sequences_render_as_harmless_text() {
    let mut a = app(72, 9);
    net(&mut a, joined("#lobby", "alice"));
    net(
        &mut a,
        say("#lobby", 1, "eve", "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{1b}[31mred\u{9b}1m\r\nfake"),
    );
    net(
        &mut a,
        ServerMsg::Topic { room: room("#lobby"), text: Some("\u{1b}[5mtopic".into()), by: None },
    );
    insta::assert_snapshot!("escape_sequences", screen(&a));
    let c = cells(&a);
    for cell in c.content() {
        assert!(!cell.symbol().chars().any(char::is_control), "{:?}", cell.symbol());
    }
}

#[test]
fn wide_characters_wrap_without_splitting() {
    let mut a = app(40, 8);
    net(&mut a, say("#lobby", 1, "bob", "世界世界世界世界世界世界世界世界 👍👍👍👍👍👍 done"));
    let s = screen(&a);
    insta::assert_snapshot!("wide_characters", s);
}

#[test]
fn an_e2e_room_is_marked_in_the_title_and_the_status_bar_and_warnings_are_loud() {
    let mut a = app(80, 12);
    net(&mut a, joined("#sec", "alice"));
    let me = Member {
        nick: nick("alice"),
        fingerprint: chatao_proto::Fingerprint::example("x"),
        away: None,
        bot: false,
        op: false,
    };
    net(
        &mut a,
        ServerMsg::Members {
            room: room("#sec"),
            members: vec![me.clone()],
            e2e: true,
            total: None,
            next: None,
            more: false,
        },
    );
    let i = a.buffers.iter().position(|b| b.target.name() == "#sec").unwrap();
    a.switch_to(i);
    let s = screen(&a);
    assert!(s.contains("[E2E] #sec (end-to-end encrypted)"), "{s}");
    let c = cells(&a);
    let (x, y) = find(&c, " E2E ");
    assert_eq!(c[(x + 1, y)].bg, Color::LightGreen, "the status bar's E2E mark stands out");
    a.update(Event::Net(NetEvent::E2e { text: "member SHA256:m is FORGED".into(), warning: true }));
    let c = cells(&a);
    let (x, y) = find(&c, "[e2e] WARNING: member");
    assert_eq!(c[(x, y)].fg, Color::LightRed, "warnings are shown as errors");
    // A server notice cannot pass for one: it is marked as the server's and is no error.
    net(&mut a, ServerMsg::Notice { text: "WARNING: member SHA256:q is FORGED".into() });
    let c = cells(&a);
    let (x, y) = find(&c, "server: WARNING: member SHA256:q");
    assert_ne!(c[(x, y)].fg, Color::LightRed, "a server notice is not shown as a warning");
    // A plain room has neither mark.
    net(&mut a, joined("#plain", "alice"));
    net(
        &mut a,
        ServerMsg::Members {
            room: room("#plain"),
            members: vec![me],
            e2e: false,
            total: None,
            next: None,
            more: false,
        },
    );
    let i = a.buffers.iter().position(|b| b.target.name() == "#plain").unwrap();
    a.switch_to(i);
    let s = screen(&a);
    assert!(!s.contains("E2E"), "{s}");
}

/// The status bar's row.
fn status_row(a: &App) -> String {
    let s = screen(a);
    let rows: Vec<&str> = s.lines().collect();
    rows[rows.len() - 2].to_owned()
}

/// Issue 16, item 7: at 80 columns the activity list was cut on the right, hiding a mention
/// in buffer 13. Mentions come first, then unread, and `+N` counts what does not fit.
#[test]
fn the_activity_list_puts_mentions_first_and_counts_what_does_not_fit() {
    let mut a = app(80, 12);
    net(&mut a, joined("#lobby", "alice"));
    for n in 2..=13 {
        let r = format!("#room{n}");
        net(&mut a, joined(&r, "alice"));
        net(&mut a, say(&r, 1, "bob", "news"));
    }
    net(&mut a, say("#room13", 2, "bob", "alice: are you there?"));
    assert_eq!(a.current, 0);
    insta::assert_snapshot!("activity_overflow", screen(&a));
    let row = status_row(&a);
    assert!(row.contains("act: 13:#room13(2!) 2:#room2(1) 3:#room3(1)"), "{row}");
    assert!(row.trim_end_matches([' ', '"']).ends_with(" +9"), "twelve rooms, three shown: {row}");
    let c = cells(&a);
    let (x, y) = find(&c, "13:#room13(2!)");
    assert_eq!(c[(x, y)].bg, Color::Yellow, "the mention keeps its colour");
    // Wide enough: all of them, and no count.
    a.update(Event::Term(TermEvent::Resize(200, 12)));
    let row = status_row(&a);
    assert!(row.contains("12:#room12(1) "), "{row}");
    assert!(!row.contains('+'), "{row}");
    // A hidden mention colours the count.
    net(&mut a, say("#room12", 2, "bob", "alice!"));
    a.update(Event::Term(TermEvent::Resize(50, 12)));
    let row = status_row(&a);
    assert!(row.contains("act: 12:#room12(2!) +11"), "{row}");
    let c = cells(&a);
    let (x, y) = find(&c, "+11");
    assert_eq!(c[(x, y)].bg, Color::Yellow, "a mention is among the hidden");
}

/// Issue 16, item 6: `/msg` from a room is echoed there and its conversation is in the
/// status bar.
#[test]
fn a_private_message_sent_from_a_room_is_echoed_there() {
    let mut a = app(80, 10);
    net(&mut a, joined("#lobby", "alice"));
    enter(&mut a, "/msg bob see you at noon");
    net(
        &mut a,
        ServerMsg::Private {
            cid: None,
            id: 1,
            time: T0,
            from: nick("alice"),
            to: nick("bob"),
            kind: MessageKind::Normal,
            text: "see you at noon".into(),
        },
    );
    insta::assert_snapshot!("private_echo", screen(&a));
    let s = screen(&a);
    assert!(s.contains("-> │ bob: see you at noon"), "{s}");
    assert!(status_row(&a).contains("act: 2:bob "), "{s}");
    let c = cells(&a);
    let (x, y) = find(&c, "-> │ bob");
    assert_eq!(c[(x, y)].fg, Color::Magenta, "marked as private");
}

/// Issue 16, item 10: history from an earlier day showed only `HH:MM`. A day-change line
/// comes where the date changes between two lines, and before the first line when that is
/// not from today.
#[test]
fn day_change_lines_separate_the_days() {
    let day = 86_400_000;
    let at = |time: u64, id: u64, text: &str, history: bool| ServerMsg::Message {
        cid: None,
        room: room("#lobby"),
        id,
        time,
        from: nick("bob"),
        kind: MessageKind::Normal,
        text: text.into(),
        history,
    };
    let mut a = app(72, 16);
    // Two days ago, the first line of its buffer (not today: a day-change line).
    a.buffers[0].entries.clear();
    net(&mut a, at(T0 - 2 * day, 1, "two days ago", true));
    net(&mut a, at(T0 - 2 * day + 60_000, 2, "same day, no line", true));
    net(&mut a, at(T0 - day, 3, "yesterday", true));
    net(&mut a, ServerMsg::HistoryEnd { room: room("#lobby"), count: 3, before: None });
    net(&mut a, joined("#lobby", "alice"));
    // Live, past midnight.
    advance(&mut a, Duration::from_secs(2 * 3600));
    net(&mut a, at(T0 + 2 * 3600 * 1000, 4, "after midnight", false));
    insta::assert_snapshot!("day_change", screen(&a));
    let s = screen(&a);
    for line in [
        "-- Sunday, 12 November 2023 --",
        "-- Monday, 13 November 2023 --",
        "-- Tuesday, 14 November 2023 --",
        "-- Wednesday, 15 November 2023 --",
    ] {
        assert_eq!(s.matches(line).count(), 1, "{line}: {s}");
    }
    let c = cells(&a);
    let (x, _) = find(&c, "-- Monday");
    assert_eq!(x, 0, "drawn from the first column, where no remote text goes");
    // Today's first line needs no day line; a narrow pane cuts the line, never wraps it.
    let mut b = app(72, 8);
    assert!(!screen(&b).contains("November"), "{}", screen(&b));
    b.update(Event::Term(TermEvent::Resize(12, 8)));
    net(&mut b, at(T0 + day, 9, "tomorrow", false));
    assert!(screen(&b).contains("-- Wednesday"), "{}", screen(&b));
}

/// Issue 15, item 5: `administrator` and `administratoR2` were both drawn `administrat+`, in
/// the same colour. Cut names keep their ends and never look the same; the member list shows
/// them whole.
#[test]
fn look_alike_long_nicknames_are_drawn_differently() {
    let mut a = app(80, 10);
    net(&mut a, joined("#lobby", "alice"));
    net(&mut a, members("#lobby", &["alice", "administrator", "administratoR2"]));
    net(&mut a, say("#lobby", 1, "administrator", "please send me your password"));
    net(&mut a, say("#lobby", 2, "administratoR2", "please send me your password"));
    let s = screen(&a);
    insta::assert_snapshot!("look_alike_nicknames", s);
    assert!(s.contains("admini+rator │ please"), "{s}");
    assert!(s.contains("admini+atoR2 │ please"), "{s}");
    // The member list is the right edge of each row.
    assert!(s.contains("│ administrator \"") && s.contains("│ administratoR2\""), "whole: {s}");
    let c = cells(&a);
    let (x1, y1) = find(&c, "admini+rator");
    let (x2, y2) = find(&c, "admini+atoR2");
    assert_ne!(c[(x1, y1)].fg, c[(x2, y2)].fg, "and in different colours");
    // Names equal at both ends: the column widens until they differ.
    let (p, q) = ("abcdefXXXXXXXXghijkl", "abcdefYYYYYYYYghijkl");
    net(&mut a, say("#lobby", 3, p, "one"));
    net(&mut a, say("#lobby", 4, q, "two"));
    let s = screen(&a);
    assert!(s.contains("abcdefX+ghijkl │ one") && s.contains("abcdefY+ghijkl │ two"), "{s}");
}

#[test]
fn a_member_list_too_narrow_for_long_names_still_tells_them_apart() {
    let mut a = app(60, 10);
    net(&mut a, joined("#lobby", "alice"));
    // Equal in their first 18 and last 8 characters: neither a plain cut nor start and end
    // tell them apart, so they are numbered.
    let (p, q) = ("abcdefghijklmnopqrXXXXstuvwxyz", "abcdefghijklmnopqrYYYYstuvwxyz");
    net(&mut a, members("#lobby", &["alice", p, q]));
    let s = screen(&a);
    // 60 columns leave the list 20: each row is `│ ` and an 18-column label.
    let listed: Vec<&str> = s.lines().filter_map(|l| l.rsplit("│ ").next()).collect();
    let first = listed.iter().find(|l| l.starts_with("abcdef")).unwrap();
    let second = listed.iter().rfind(|l| l.starts_with("abcdef")).unwrap();
    assert_ne!(first, second, "{s}");
    assert!(first.starts_with("abcdefghijklmnop~1"), "{s}");
}

/// Issue 15, item 18: a message of two million lines. The entry keeps a bounded part and
/// says how much it did not keep; drawing the screen lays out only the lines it shows, and so
/// does drawing it again after a keystroke, scrolled to the bottom or up into the message.
#[test]
fn a_message_of_two_million_lines_is_laid_out_only_where_it_shows() {
    use crate::ui::messages::LAID_OUT;
    let laid_out = || LAID_OUT.with(|n| n.replace(0));
    let mut a = app(80, 24);
    net(&mut a, joined("#lobby", "alice"));
    let text = format!("first{}", "\nrow".repeat(2_000_000));
    net(&mut a, say("#lobby", 1, "mallory", &text));
    let (_, pane) = a.pane_size();
    let pane = usize::from(pane);

    laid_out();
    let s = screen(&a);
    assert!(s.contains("… 1990001 more lines, 7.6 MiB, not kept (client limit)"), "{s}");
    assert!(laid_out() <= pane, "the first screen lays out a screenful");
    key(&mut a, KeyCode::Char('x'));
    let s = screen(&a);
    assert!(s.contains("[alice] x"), "{s}");
    assert!(laid_out() <= pane, "a keystroke lays out a screenful");

    // Scrolling measures the message once (its kept lines, never the two million)...
    key(&mut a, KeyCode::PageUp);
    assert!(laid_out() <= crate::app::limits::MAX_ENTRY_LINES + 10);
    let s = screen(&a);
    assert!(s.contains("more below: PgDn"), "{s}");
    laid_out();
    // ...and then each keystroke lays out the rows shown and the page below them.
    key(&mut a, KeyCode::Char('y'));
    let s = screen(&a);
    assert!(s.contains("[alice] xy") && s.contains("│ row"), "{s}");
    let n = laid_out();
    assert!(n <= 3 * pane, "a keystroke scrolled up laid out {n} lines");
    // The top of the message is still there.
    for _ in 0..1000 {
        key(&mut a, KeyCode::PageUp);
    }
    laid_out();
    let s = screen(&a);
    assert!(s.contains("mallory │ first"), "{s}");
    assert!(laid_out() <= pane, "only the top is laid out again");
}

#[test]
fn timestamps_with_seconds_widen_the_time_column() {
    let mut a = crate::app::testing::chatting(80, 12);
    net(&mut a, say("#lobby", 10, "bob", "first line"));
    let minutes = screen(&a);
    // T0 + 10 min is 22:23:20 UTC.
    assert!(minutes.contains("22:23 "), "{minutes}");
    assert!(!minutes.contains("22:23:20"), "{minutes}");
    a.config.seconds = true;
    let seconds = screen(&a);
    assert!(seconds.contains("22:23:20 "), "{seconds}");
    let c = cells(&a);
    let (x, y) = find(&c, "first line");
    let (tx, ty) = find(&c, "22:23:20");
    assert_eq!(ty, y);
    assert!(x >= tx + 9, "the text starts after the wider column: {x} vs {tx}");
    // Wrapped rows line up under the text, past the wider column too.
    let mut long = a;
    net(&mut long, say("#lobby", 11, "bob", &"word ".repeat(30)));
    let s = screen(&long);
    assert!(s.contains("22:24:20 "), "{s}");
    let bars: Vec<Option<usize>> = s
        .lines()
        .filter(|l| l.contains("word"))
        .map(|l| l.chars().position(|c| c == '│'))
        .collect();
    assert!(bars.len() > 1, "the long line wraps: {s}");
    assert!(bars.iter().all(|b| *b == bars[0]), "continuation rows line up: {bars:?}\n{s}");
}

#[test]
fn the_config_theme_colours_the_screen() {
    let mut a = crate::app::testing::chatting(80, 12);
    net(&mut a, say("#lobby", 10, "bob", "alice: ping"));
    let c = cells(&a);
    let (x, y) = find(&c, "you joined #lobby");
    assert_eq!(c[(x, y)].fg, Color::Green, "the built-in join colour");
    a.config.theme = crate::config::Theme {
        join: Some(Color::Rgb(1, 2, 3)),
        time: Some(Color::Indexed(200)),
        mention: Some(Color::LightBlue),
        title_bar: Some(Color::Indexed(22)),
        status_bar: Some(Color::Indexed(52)),
        ..Default::default()
    };
    let c = cells(&a);
    let (x, y) = find(&c, "you joined #lobby");
    assert_eq!(c[(x, y)].fg, Color::Rgb(1, 2, 3));
    let (x, y) = find(&c, "22:23");
    assert_eq!(c[(x, y)].fg, Color::Indexed(200));
    let (x, y) = find(&c, "bob │ alice: ping");
    assert_eq!(c[(x, y)].bg, Color::LightBlue, "the mention's prefix");
    assert_eq!(c[(0, 0)].bg, Color::Indexed(22), "the title bar");
    let (_, h) = a.size;
    assert_eq!(c[(79, h - 2)].bg, Color::Indexed(52), "the status bar");
    let (x, y) = find(&c, "[alice]");
    assert_eq!(c[(x, y)].fg, Color::Cyan, "the built-in prompt colour");

    // The rest of the theme: the prompt, the activity list, a day change.
    a.config.theme.prompt = Some(Color::Indexed(33));
    a.config.theme.activity_mention = Some(Color::Indexed(44));
    net(
        &mut a,
        ServerMsg::Private {
            cid: None,
            id: 2,
            time: T0,
            from: nick("bob"),
            to: nick("alice"),
            kind: MessageKind::Normal,
            text: "psst".into(),
        },
    );
    let c = cells(&a);
    let (x, y) = find(&c, "[alice]");
    assert_eq!(c[(x, y)].fg, Color::Indexed(33), "the prompt");
    let row = status_row(&a);
    assert!(row.contains("3:bob(1!)"), "{row}");
    let (x, y) = find(&c, "3:bob(1!)");
    assert_eq!(c[(x, y)].fg, Color::Indexed(44), "a private message in the activity list");
    // A live message after midnight draws today's day-change line.
    let mut b = app(72, 8);
    b.config.theme.day_change = Some(Color::Indexed(55));
    let tomorrow = T0 + 86_400_000;
    let msg = |time| ServerMsg::Message {
        cid: None,
        room: room("#lobby"),
        id: 9,
        time,
        from: nick("bob"),
        kind: MessageKind::Normal,
        text: "tomorrow".into(),
        history: false,
    };
    net(&mut b, msg(tomorrow));
    let c = cells(&b);
    let (x, y) = find(&c, "-- Wednesday");
    assert_eq!(c[(x, y)].fg, Color::Indexed(55), "a day-change line");
}

/// The screen and what the message pane said of its rows.
fn drawn(app: &App) -> (Cells, super::messages::Drawn) {
    let (w, h) = app.size;
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    let mut drawn = None;
    t.draw(|f| drawn = Some(render(app, f))).unwrap();
    (t.backend().buffer().clone(), drawn.unwrap())
}

/// A URL wider than the text column: the layout says its rows are joined (the word-wrapped
/// rows around it are not), and the links read back are that URL whole, in a piece per row;
/// scrolled so that it goes on under the "more below" marker, no piece of it is linked.
#[test]
fn a_hard_wrapped_url_is_joined_over_its_rows_and_linked_whole() {
    let mut a = app(60, 14);
    net(&mut a, joined("#lobby", "alice"));
    for id in 1..12 {
        net(&mut a, say("#lobby", id, "carol", "earlier"));
    }
    let url = format!("https://example.org/{}", "x".repeat(70));
    let text = format!("see {url} and then some words that wrap at a space");
    net(&mut a, say("#lobby", 12, "bob", &text));
    let (cells, d) = drawn(&a);
    let (_, see) = find(&cells, "bob │ see");
    let row = |y: u16| usize::from(y - d.area.y);
    let links = super::links::regions(&cells, &d);
    let pieces: Vec<_> = links.iter().filter(|r| r.url == url).collect();
    assert!(pieces.len() >= 2, "{links:?}");
    assert_eq!(pieces.iter().map(|r| usize::from(r.len)).sum::<usize>(), url.len());
    assert!(pieces.iter().all(|r| r.id == pieces[0].id));
    for (i, p) in pieces.iter().enumerate() {
        assert_eq!(p.y, see + 1 + i as u16, "one piece per row, below `see`");
        let last = i + 1 == pieces.len();
        assert_eq!(d.joined[row(p.y)], !last, "row {}: {:?}", p.y, d.joined);
        if i > 0 {
            assert_eq!(p.x, d.text_x, "a continuation starts in the text column");
        }
    }
    assert!(!d.joined[row(see)], "`see` ends at a space");
    let end = pieces.last().unwrap().y;
    assert!(d.joined[row(end)..].iter().all(|j| !j), "the words after it are word-wrapped");
    assert_eq!(links.len(), pieces.len(), "nothing else is a link");

    // Scrolled up until the URL's first row is the last one above the marker.
    for id in 13..30 {
        net(&mut a, say("#lobby", id, "carol", "later"));
    }
    let cut = (1..60).find_map(|scroll| {
        a.buffers[a.current].scroll = scroll;
        let (cells, d) = drawn(&a);
        let above = cells_row(&cells, d.area.bottom() - 1);
        above.contains("│ https://example.org/").then_some((cells, d))
    });
    let (cells, d) = cut.expect("a scroll position with the URL's first row at the bottom");
    assert!(cells_row(&cells, d.area.bottom()).contains("more below"));
    assert!(d.joined.last().copied().unwrap(), "it goes on under the marker");
    assert_eq!(d.joined.len(), usize::from(d.area.height));
    assert_eq!(super::links::regions(&cells, &d), [], "no partial target");
}

fn cells_row(cells: &Cells, y: u16) -> String {
    (0..cells.area.width).map(|x| cells[(x, y)].symbol()).collect()
}
