//! `App::update` for issue 19's daily-use features: scrollback into the past (PgUp at the top
//! asks for older pages), the read marker, search, links and notifications.
#![allow(clippy::unwrap_used)]

use chatao_proto::{ClientMsg, ServerMsg};
use crossterm::event::KeyCode;

use super::buffer::Older;
use super::testing::*;
use super::*;
use crate::net::Closed;

fn old(r: &str, id: u64, text: &str) -> ServerMsg {
    let mut m = say(r, id, "bob", text);
    if let ServerMsg::Message { history, .. } = &mut m {
        *history = true;
    }
    m
}

fn page_end(r: &str, count: u32, before: u64) -> ServerMsg {
    ServerMsg::HistoryEnd { room: room(r), count, before: Some(before) }
}

fn ids(a: &App) -> Vec<u64> {
    a.current_buffer().entries.iter().filter_map(|e| e.id).collect()
}

/// PgUp until something is sent (at most `n` presses).
fn pgup_until_sent(a: &mut App, n: usize) -> Vec<ClientMsg> {
    for _ in 0..n {
        let s = sent(&key(a, KeyCode::PageUp));
        if !s.is_empty() {
            return s;
        }
    }
    vec![]
}

fn older_ask(r: &str, before: u64) -> ClientMsg {
    ClientMsg::History {
        room: r.into(),
        since: 0,
        limit: Some(older::OLDER_PAGE),
        before: Some(before),
    }
}

#[test]
fn pgup_at_the_top_loads_older_pages_until_the_start_of_history() {
    let mut a = app(80, 24);
    net(&mut a, joined("#lobby", "alice"));
    for id in 201..=203 {
        net(&mut a, old("#lobby", id, &format!("m{id}")));
    }
    net(&mut a, ServerMsg::HistoryEnd { room: room("#lobby"), count: 3, before: None });
    net(&mut a, say("#lobby", 204, "bob", "live"));
    // The buffer fits the screen: the first PgUp is at the top already.
    assert_eq!(pgup_until_sent(&mut a, 1), [older_ask("#lobby", 201)]);
    assert_eq!(a.current_buffer().older, Older::Loading { before: 201 });
    assert!(crate::ui::tests::screen(&a).contains("-- loading older messages… --"));
    assert!(sent(&key(&mut a, KeyCode::PageUp)).is_empty(), "one page at a time");
    for id in 101..=200 {
        assert!(net(&mut a, old("#lobby", id, &format!("m{id}"))).is_empty());
    }
    net(&mut a, page_end("#lobby", 100, 201));
    assert_eq!(a.current_buffer().older, Older::Idle);
    assert_eq!(ids(&a), (101..=204).collect::<Vec<_>>(), "older above, in order, each once");
    let b = a.current_buffer();
    assert_eq!((b.unread, b.below), (0, 0), "older pages are neither unread nor new below");
    let notes = b.entries.iter().filter(|e| e.text.starts_with("end of history")).count();
    assert_eq!(notes, 1, "the join's, and no note for a page");
    // Scrolled into them: the view stays put when the next page lands above it.
    assert_eq!(pgup_until_sent(&mut a, 10), [older_ask("#lobby", 101)]);
    let scroll = a.current_buffer().scroll;
    for id in 1..=100 {
        net(&mut a, old("#lobby", id, &format!("m{id}")));
    }
    net(&mut a, page_end("#lobby", 100, 101));
    assert_eq!(a.current_buffer().scroll, scroll, "the view did not move");
    assert_eq!(pgup_until_sent(&mut a, 20), [older_ask("#lobby", 1)]);
    net(&mut a, page_end("#lobby", 0, 1));
    assert_eq!(a.current_buffer().older, Older::Start);
    assert!(crate::ui::tests::screen(&a).contains("-- start of history --"));
    assert!(pgup_until_sent(&mut a, 3).is_empty(), "nothing older to ask for");
    assert_eq!(ids(&a), (1..=204).collect::<Vec<_>>());
}

/// A server from before `history`'s `before` answers a page as it would `since`: the room's
/// oldest messages and a `history_end` without `before`. That answer is dropped (it is not
/// the page above what is held), the buffer says so instead of "loading…" forever, and PgUp
/// asks nothing more until the next connection.
#[test]
fn a_server_without_before_is_told_not_left_loading_and_its_answer_is_not_shown() {
    let mut a = app(80, 24);
    net(&mut a, joined("#lobby", "alice"));
    for id in 201..=203 {
        net(&mut a, old("#lobby", id, &format!("m{id}")));
    }
    net(&mut a, ServerMsg::HistoryEnd { room: room("#lobby"), count: 3, before: None });
    assert_eq!(pgup_until_sent(&mut a, 1), [older_ask("#lobby", 201)]);
    // The old server's answer: messages 1..=100 from the room's start, then a catch-up's end.
    for id in 1..=100 {
        net(&mut a, old("#lobby", id, &format!("m{id}")));
    }
    assert_eq!(ids(&a), [201, 202, 203], "nothing of a page is shown before its end");
    net(&mut a, ServerMsg::HistoryEnd { room: room("#lobby"), count: 100, before: None });
    assert_eq!(a.current_buffer().older, Older::Unsupported);
    assert_eq!(ids(&a), [201, 202, 203], "the room's start is not drawn above as if older");
    let screen = crate::ui::tests::screen(&a);
    assert!(screen.contains("-- this server cannot load older messages --"), "{screen}");
    assert!(!screen.contains("loading"), "{screen}");
    let notes = a.current_buffer().entries.iter().filter(|e| e.text.contains("history (")).count();
    assert_eq!(notes, 1, "the answer ends no catch-up of its own");
    assert!(pgup_until_sent(&mut a, 3).is_empty(), "nothing more asked of this server");
    // The next connection may be to a newer server: PgUp asks again there.
    a.update(Event::Net(NetEvent::Closed(Closed::Lost("reset".into()))));
    assert_eq!(a.current_buffer().older, Older::Idle);
}

#[test]
fn a_lost_connection_during_a_page_lets_pgup_ask_again_after_the_catch_up() {
    let mut a = app(80, 24);
    net(&mut a, joined("#lobby", "alice"));
    net(&mut a, old("#lobby", 50, "m50"));
    net(&mut a, ServerMsg::HistoryEnd { room: room("#lobby"), count: 1, before: None });
    assert_eq!(pgup_until_sent(&mut a, 1), [older_ask("#lobby", 50)]);
    a.update(Event::Net(NetEvent::Closed(Closed::Lost("reset".into()))));
    assert_eq!(a.current_buffer().older, Older::Idle);
    a.update(Event::Connected(Box::new(welcome("alice"))));
    assert!(pgup_until_sent(&mut a, 1).is_empty(), "not during the catch-up");
    // The catch-up: the automatic join's replay and the history answer.
    net(&mut a, ServerMsg::HistoryEnd { room: room("#lobby"), count: 0, before: None });
    net(&mut a, ServerMsg::HistoryEnd { room: room("#lobby"), count: 0, before: None });
    assert_eq!(pgup_until_sent(&mut a, 1), [older_ask("#lobby", 50)]);
}

fn notifications(effects: &[Effect]) -> Vec<notify::Notification> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn focus(a: &mut App, focused: bool) {
    use crossterm::event::Event as TermEvent;
    a.update(Event::Term(if focused { TermEvent::FocusGained } else { TermEvent::FocusLost }));
}

#[test]
fn a_mention_or_a_private_message_notifies_only_while_the_terminal_is_not_focused() {
    let mut a = chatting(80, 24);
    assert!(notifications(&net(&mut a, say("#rust", 1, "bob", "alice: focused"))).is_empty());
    focus(&mut a, false);
    assert!(notifications(&net(&mut a, say("#rust", 2, "bob", "no mention"))).is_empty());
    let n = notifications(&net(&mut a, say("#rust", 3, "bob", "alice: look\x1b]0;x\x07")));
    let want = notify::Notification {
        sender: "bob".into(),
        room: Some("#rust".into()),
        text: Some("alice: look␛]0;x␇".into()),
    };
    assert_eq!(n, [want], "cleaned (the buffer's stand-ins), with sender and room");
    // One per NOTIFY_GAP: the next private message is not notified, the one after the gap is.
    assert!(notifications(&net(&mut a, private(1, "carol", "alice", "psst"))).is_empty());
    advance(&mut a, notify::NOTIFY_GAP);
    let n = notifications(&net(&mut a, private(2, "carol", "alice", "psst again")));
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].room.as_deref(), n[0].text.as_deref()), (None, Some("psst again")));
    // Our own words never notify; focus back: nothing.
    advance(&mut a, notify::NOTIFY_GAP);
    assert!(notifications(&net(&mut a, say("#rust", 4, "alice", "alice: me"))).is_empty());
    focus(&mut a, true);
    assert!(notifications(&net(&mut a, private(3, "carol", "alice", "back?"))).is_empty());
}

#[test]
fn a_notification_from_an_e2e_room_leaves_the_text_out_unless_allowed() {
    for allowed in [false, true] {
        let mut a = chatting(80, 24);
        a.config.notify.e2e_text = allowed;
        let i = a.find("#rust").unwrap();
        a.buffers[i].e2e = true;
        focus(&mut a, false);
        let n = notifications(&net(&mut a, say("#rust", 1, "bob", "alice: the secret")));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].text.is_some(), allowed);
        let seq = n[0].escape(notify::Osc::Nine, false);
        assert_eq!(seq.contains("the secret"), allowed, "{seq:?}");
        assert!(seq.contains("bob in #rust"), "{seq:?}");
    }
    let mut a = chatting(80, 24);
    a.config.notify.enabled = false;
    focus(&mut a, false);
    assert!(notifications(&net(&mut a, say("#rust", 1, "bob", "alice: off"))).is_empty());
}

fn kinds(a: &App, i: usize) -> Vec<String> {
    a.buffers[i]
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            super::buffer::Kind::Marker => Some("MARKER".to_owned()),
            super::buffer::Kind::Message { .. } => Some(e.text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_read_marker_goes_where_you_left_and_survives_a_reconnection_without_double_counting() {
    let mut a = chatting(80, 24);
    // #rust shown, then left: nothing arrived yet, so no marker.
    alt(&mut a, '2');
    net(&mut a, say("#rust", 1, "bob", "r1"));
    alt(&mut a, '1');
    assert_eq!(kinds(&a, 1), ["r1"]);
    net(&mut a, say("#rust", 2, "bob", "r2"));
    assert_eq!(kinds(&a, 1), ["r1", "MARKER", "r2"]);
    assert_eq!(a.buffers[1].unread, 1);
    // A reconnection: the catch-up replays r1 and r2 again and brings r3; r4 is live.
    a.update(Event::Net(NetEvent::Closed(Closed::Lost("reset".into()))));
    a.update(Event::Connected(Box::new(welcome("alice"))));
    for id in 1..=3 {
        net(&mut a, old("#rust", id, &format!("r{id}")));
    }
    net(&mut a, ServerMsg::HistoryEnd { room: room("#rust"), count: 3, before: None });
    net(&mut a, say("#rust", 4, "bob", "r4"));
    assert_eq!(kinds(&a, 1), ["r1", "MARKER", "r2", "r3", "r4"], "one marker, each line once");
    assert_eq!(a.buffers[1].unread, 3, "r2 before the loss, r3 and r4 since: not reset, not twice");
    // Going back shows them read; the marker stays until the buffer is left again.
    alt(&mut a, '2');
    assert_eq!(a.buffers[1].unread, 0);
    net(&mut a, say("#rust", 5, "bob", "r5"));
    assert_eq!(kinds(&a, 1), ["r1", "MARKER", "r2", "r3", "r4", "r5"]);
    // The terminal losing the focus counts as leaving.
    focus(&mut a, false);
    net(&mut a, say("#rust", 6, "bob", "r6"));
    assert_eq!(kinds(&a, 1), ["r1", "r2", "r3", "r4", "r5", "MARKER", "r6"]);
    focus(&mut a, true);
    net(&mut a, say("#rust", 7, "bob", "r7"));
    assert_eq!(kinds(&a, 1).iter().filter(|k| *k == "MARKER").count(), 1);
    assert!(crate::ui::tests::screen(&a).contains("── read up to here (Alt-U) ──"));
}

#[test]
fn alt_u_scrolls_to_the_read_marker() {
    let mut a = chatting(80, 12);
    alt(&mut a, '2');
    net(&mut a, say("#rust", 1, "bob", "before the marker"));
    alt(&mut a, '1');
    for id in 2..=60 {
        net(&mut a, say("#rust", id, "bob", &format!("after {id}")));
    }
    alt(&mut a, '2');
    assert!(!crate::ui::tests::screen(&a).contains("read up to here"));
    alt(&mut a, 'u');
    let screen = crate::ui::tests::screen(&a);
    let rows: Vec<&str> = screen.lines().collect();
    let at = rows.iter().position(|l| l.contains("read up to here")).expect(&screen);
    assert!(rows[at + 1].contains("after 2"), "{screen}");
    assert!(rows[at.saturating_sub(1)].contains("before the marker") || at <= 1, "{screen}");
}

fn current_match(a: &App) -> Option<String> {
    let s = a.search.as_ref()?;
    s.current(a.current_buffer()).map(|i| a.current_buffer().entries[i].text.clone())
}

#[test]
fn search_finds_matches_ignoring_case_moves_with_n_and_includes_older_pages() {
    let mut a = chatting(80, 24);
    alt(&mut a, '2');
    net(&mut a, joined("#rust", "alice"));
    for id in 101..=140 {
        let text = if id % 10 == 0 { format!("Deploy {id}") } else { format!("chat {id}") };
        net(&mut a, say("#rust", id, "bob", &text));
    }
    // Ctrl-R, typing: the newest match at each key.
    ctrl(&mut a, 'r');
    type_str(&mut a, "dEpL");
    assert_eq!(current_match(&a).as_deref(), Some("Deploy 140"));
    assert!(crate::ui::tests::screen(&a).contains("(search) dEpL"));
    // Ctrl-R again: older; Ctrl-S: newer.
    ctrl(&mut a, 'r');
    assert_eq!(current_match(&a).as_deref(), Some("Deploy 130"));
    ctrl(&mut a, 's');
    assert_eq!(current_match(&a).as_deref(), Some("Deploy 140"));
    // Enter ends the typing: n / N move, and are not typed.
    key(&mut a, KeyCode::Enter);
    type_str(&mut a, "nnn");
    assert_eq!(current_match(&a).as_deref(), Some("Deploy 110"));
    type_str(&mut a, "n");
    assert_eq!(current_match(&a).as_deref(), Some("Deploy 110"), "no older match: stays");
    assert!(a.search.as_ref().unwrap().failed);
    type_str(&mut a, "N");
    assert_eq!(current_match(&a).as_deref(), Some("Deploy 120"));
    // The match is on screen, highlighted.
    let cells = crate::ui::tests::cells(&a);
    let (x, y) = crate::ui::tests::find(&cells, "Deploy 120");
    assert_eq!(cells[(x, y)].bg, ratatui::style::Color::Yellow);
    assert_ne!(cells[(x + 7, y)].bg, ratatui::style::Color::Yellow, "only the match");
    // An older page loaded with PgUp is searched too, and the match stays the same entry.
    key(&mut a, KeyCode::Esc);
    assert!(a.search.is_none());
    assert_eq!(a.editor.text(), "", "nothing typed into the input line");
    let asked = pgup_until_sent(&mut a, 20);
    assert_eq!(asked, [older_ask("#rust", 101)]);
    for id in 91..=100 {
        net(&mut a, old("#rust", id, if id == 95 { "an old DEPLOY" } else { "old" }));
    }
    net(&mut a, page_end("#rust", 10, 101));
    enter(&mut a, "/search deploy");
    assert_eq!(current_match(&a).as_deref(), Some("Deploy 140"));
    for _ in 0..4 {
        type_str(&mut a, "n");
    }
    assert_eq!(current_match(&a).as_deref(), Some("an old DEPLOY"));
    // Switching buffers leaves the search.
    alt(&mut a, '1');
    assert!(a.search.is_none());
}

#[test]
fn url_lists_the_buffer_s_last_links() {
    let mut a = chatting(80, 24);
    net(&mut a, say("#lobby", 4, "bob", "docs at https://docs.example/a and www.b.example."));
    net(&mut a, say("#lobby", 5, "carol", "again https://docs.example/a, then http://c.example/x"));
    enter(&mut a, "/url");
    let shown: Vec<String> = a.current_buffer().entries.iter().map(|e| e.text.clone()).collect();
    let at = shown.iter().position(|t| t == "last 3 of 3 links (newest first):").unwrap();
    assert_eq!(
        shown[at + 1..at + 4],
        [" 1: http://c.example/x", " 2: https://docs.example/a", " 3: www.b.example"]
    );
    enter(&mut a, "/url 3");
    let entries = &a.current_buffer().entries;
    assert_eq!(entries[entries.len() - 2].text, "www.b.example", "then how to open it");
    enter(&mut a, "/url 9");
    assert_eq!(a.current_buffer().entries.back().unwrap().text, "no link 9: /url lists 3 links");
}

fn last_text(a: &App) -> String {
    a.current_buffer().entries.back().unwrap().text.clone()
}

fn opened(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::OpenUrl(url) => Some(url.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn url_n_opens_the_link_s_checked_target_with_url_command() {
    let mut a = chatting(80, 24);
    a.config.url_command = vec!["xdg-open".into()];
    net(&mut a, say("#lobby", 4, "bob", "docs at www.b.example/x?y=1 and HTTPS://C.EXAMPLE/z"));
    let effects = enter(&mut a, "/url 1");
    assert_eq!(opened(&effects), ["HTTPS://C.EXAMPLE/z"]);
    assert_eq!(last_text(&a), "HTTPS://C.EXAMPLE/z", "shown whole too");
    // `www.` is opened as https.
    assert_eq!(opened(&enter(&mut a, "/url 2")), ["https://www.b.example/x?y=1"]);
    assert_eq!(last_text(&a), "www.b.example/x?y=1");
    assert_eq!(opened(&enter(&mut a, "/url 3")), Vec::<String>::new());
    assert_eq!(opened(&enter(&mut a, "/url")), Vec::<String>::new(), "the list opens nothing");
}

#[test]
fn url_n_without_url_command_shows_the_link_and_says_once_how_to_open_it() {
    let mut a = chatting(80, 24);
    net(&mut a, say("#lobby", 4, "bob", "see https://a.example/p"));
    let hint = "to open links with /url N, set url_command = \"xdg-open\" in config.toml";
    assert_eq!(opened(&enter(&mut a, "/url 1")), Vec::<String>::new());
    let texts: Vec<String> = a.current_buffer().entries.iter().map(|e| e.text.clone()).collect();
    assert_eq!(texts[texts.len() - 2..], ["https://a.example/p".to_owned(), hint.to_owned()]);
    assert_eq!(opened(&enter(&mut a, "/url 1")), Vec::<String>::new());
    assert_eq!(last_text(&a), "https://a.example/p", "the hint is given once");
}

#[test]
fn a_hostile_link_is_shown_but_never_opened() {
    let mut a = chatting(80, 24);
    a.config.url_command = vec!["xdg-open".into()];
    let long = format!("https://long.example/{}", "x".repeat(crate::ui::links::MAX_URL));
    for (id, text) in [
        "https://evil.example/\u{1b}]8;;https://phish.example/\u{7}",
        "https://evil.example/\u{202e}gpj.exe",
        "https://evil.example/é",
        &long,
    ]
    .into_iter()
    .enumerate()
    {
        net(&mut a, say("#lobby", 4 + id as u64, "mallory", text));
        let effects = enter(&mut a, "/url 1");
        assert_eq!(opened(&effects), Vec::<String>::new(), "{text:?}");
        let entries = &a.current_buffer().entries;
        let shown = &entries[entries.len() - 2];
        assert!(shown.text.starts_with("https://"), "shown: {:?}", shown.text);
        assert_eq!(entries.back().unwrap().kind, Kind::Error);
        assert!(last_text(&a).starts_with("this link is not opened"), "{}", last_text(&a));
    }
}
