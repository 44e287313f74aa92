//! The text rules against the real server (issue 15, item 20): text that draws nothing (only
//! zero-width and other invisible characters) and the line separators U+2028/U+2029 are refused
//! with `invalid_text`, in messages, private messages, topics and away reasons, and nothing of
//! it reaches anyone else.
#![allow(clippy::unwrap_used)]

use chatao_proto::{ClientMsg, ErrorCode, ServerMsg};
use chatao_testkit::{TestClient, TestServer};

/// Zero-width space, non-joiner, joiner, word joiner, BOM, soft hyphen, a variation selector,
/// the Hangul filler, a tag character.
const INVISIBLE: &str = "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}\u{00AD}\u{FE0F}\u{3164}\u{E0041}";

#[tokio::test]
async fn invisible_only_text_and_line_separators_are_invalid_text() {
    let server = TestServer::start().await;
    let mut alice = TestClient::connect(server.addr, "alice").await.unwrap();
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    alice
        .expect("bob", |m| matches!(m, ServerMsg::Join { nick, .. } if nick.as_str() == "bob"))
        .await
        .unwrap();
    let room = || "#lobby".to_owned();
    let refused = [
        (ClientMsg::Say { cid: None, room: room(), text: "\u{200B}".into() }, "text is empty"),
        (ClientMsg::Say { cid: None, room: room(), text: INVISIBLE.into() }, "text is empty"),
        (
            ClientMsg::Say { cid: None, room: room(), text: format!(" {INVISIBLE}\n ") },
            "text is empty",
        ),
        (ClientMsg::Me { cid: None, room: room(), text: INVISIBLE.into() }, "text is empty"),
        (ClientMsg::Msg { cid: None, to: "bob".into(), text: INVISIBLE.into() }, "text is empty"),
        (ClientMsg::Say { cid: None, room: room(), text: "one\u{2028}two".into() }, "U+2028"),
        (ClientMsg::Say { cid: None, room: room(), text: "one\u{2029}two".into() }, "U+2029"),
        (ClientMsg::Msg { cid: None, to: "bob".into(), text: "a\u{2028}b".into() }, "U+2028"),
        (ClientMsg::Topic { room: room(), text: Some(INVISIBLE.into()) }, "text is empty"),
        (ClientMsg::Topic { room: room(), text: Some("a\u{2028}b".into()) }, "U+2028"),
        (ClientMsg::Away { reason: Some(INVISIBLE.into()) }, "text is empty"),
    ];
    for (msg, why) in &refused {
        alice.send(msg).await.unwrap();
        let (code, message) = alice.expect_error().await.unwrap();
        assert_eq!(code, ErrorCode::InvalidText, "{msg:?}: {message}");
        assert!(message.contains(why), "{msg:?}: {message}");
    }
    // Visible text with invisible characters inside is ordinary text.
    let emoji = "👩\u{200D}💻 works";
    alice.say(emoji).await.unwrap();
    alice.expect_text(emoji).await.unwrap();
    // Bob saw none of the refused ones: the first thing said, written or set since he came is
    // the emoji.
    let first = bob
        .expect("the first text", |m| {
            matches!(
                m,
                ServerMsg::Message { .. }
                    | ServerMsg::Private { .. }
                    | ServerMsg::Topic { .. }
                    | ServerMsg::Away { .. }
            )
        })
        .await
        .unwrap();
    assert!(matches!(&first, ServerMsg::Message { text, .. } if text == emoji), "{first:?}");
}
