//! Property tests of the codec, in the normal suite (fuzz/ has the long-running version):
//! every message, whatever its field values, survives encode and decode, and is one record
//! with one newline, at its end; arbitrary JSON and arbitrary bytes never panic the decoders,
//! and what decodes re-encodes to the same message; the text rules and `sanitize` agree.
//!
//! Messages are written as JSON rather than built as Rust values, so that these tests keep
//! compiling as variants and optional fields are added.
#![allow(clippy::unwrap_used)]

use chatao_proto::text::{MAX_BLANK_RUN, is_blank, is_display_hazard};
use chatao_proto::{
    ClientMsg, ServerMsg, check_text, decode_client, decode_server, encode, sanitize, sanitize_line,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn nick() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,32}"
}

fn room() -> impl Strategy<Value = String> {
    "#[a-z0-9_-]{1,32}"
}

/// Any text, control characters, bidirectional controls, zero-width characters, line
/// separators, blanks and newlines included.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[\\x00-\\x7f\u{80}-\u{9f}\u{202a}-\u{202e}\u{2066}-\u{2069}a-z ]{0,64}",
        "[\u{200b}-\u{200f}\u{2028}\u{2029}\u{2060}\u{feff}\u{3000}\u{2800}\u{061c}\\ta ]{0,64}",
    ]
}

fn code() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "bad_message",
        "bad_sequence",
        "invalid_nick",
        "nick_in_use",
        "rate_limited",
        "shutdown",
        "too_slow",
        "timeout",
        "server_full",
        "busy",
        "from_a_newer_server",
    ])
}

fn client_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(|n| json!({"type": "hello", "nick": n})),
        (any::<String>(), text()).prop_map(|(r, t)| json!({"type": "say", "room": r, "text": t})),
        (any::<String>(), text()).prop_map(|(r, t)| json!({"type": "me", "room": r, "text": t})),
        prop::option::of(text()).prop_map(|r| json!({"type": "quit", "reason": r})),
        any::<u64>().prop_map(|t| json!({"type": "ping", "token": t})),
        any::<u64>().prop_map(|t| json!({"type": "pong", "token": t})),
        (room(), prop::option::of(any::<u64>()))
            .prop_map(|(r, s)| json!({"type": "join", "room": r, "since": s})),
    ]
}

/// A canonical fingerprint: 42 base64 characters and a last one whose unused bits are zero.
fn fingerprint() -> impl Strategy<Value = String> {
    "SHA256:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]"
}

fn server_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        (any::<u64>(), nick(), text(), fingerprint(), any::<u32>(), any::<u32>()).prop_map(
            |(s, n, t, f, r, b)| {
                json!({"type": "welcome", "session": s, "nick": n, "fingerprint": f, "server": t,
                   "limits": {"max_text_bytes": r, "rate_per_sec": r, "burst": b}})
            }
        ),
        (room(), nick(), fingerprint())
            .prop_map(|(r, n, f)| json!({"type": "join", "room": r, "nick": n, "fingerprint": f})),
        (
            room(),
            nick(),
            prop::sample::select(vec!["quit", "lost", "dropped"]),
            prop::option::of(text())
        )
            .prop_map(|(r, n, why, m)| {
                json!({"type": "leave", "room": r, "nick": n, "reason": why, "message": m})
            }),
        (room(), any::<u64>(), any::<u64>(), nick(), any::<bool>(), text()).prop_map(
            |(r, id, time, from, action, t)| {
                let kind = if action { "action" } else { "normal" };
                json!({"type": "message", "room": r, "id": id, "time": time, "from": from,
                       "kind": kind, "text": t})
            }
        ),
        (code(), text()).prop_map(|(c, m)| json!({"type": "error", "code": c, "message": m})),
        (prop::option::of(code()), text())
            .prop_map(|(c, r)| json!({"type": "bye", "code": c, "reason": r})),
        any::<u64>().prop_map(|t| json!({"type": "ping", "token": t})),
        any::<u64>().prop_map(|t| json!({"type": "pong", "token": t})),
    ]
}

/// JSON of any shape, objects usually carrying a `type` that names a real message.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
        nick().prop_map(Value::from),
        room().prop_map(Value::from),
    ];
    let types = prop::sample::select(vec![
        "hello", "say", "me", "quit", "ping", "pong", "join", "welcome", "message", "leave",
        "error", "bye", "members", "part", "topic",
    ]);
    let fields = prop::sample::select(vec![
        "nick",
        "room",
        "text",
        "reason",
        "token",
        "since",
        "id",
        "time",
        "from",
        "kind",
        "code",
        "message",
        "session",
        "fingerprint",
        "server",
        "limits",
        "members",
        "history",
    ]);
    leaf.prop_recursive(3, 24, 6, move |inner| {
        (types.clone(), prop::collection::vec((fields.clone(), inner), 0..6)).prop_map(|(t, fs)| {
            let mut o = serde_json::Map::new();
            o.insert("type".into(), Value::from(t));
            for (k, v) in fs {
                o.insert(k.into(), v);
            }
            Value::Object(o)
        })
    })
}

/// Encodes `m` and checks the record's shape: one line, ending in its only newline.
fn one_record<T: serde::Serialize>(m: &T) -> bytes::Bytes {
    let b = encode(m);
    assert_eq!(b.iter().filter(|&&c| c == b'\n').count(), 1, "{b:?}");
    assert_eq!(b.last(), Some(&b'\n'));
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn client_messages_round_trip(v in client_json()) {
        let m: ClientMsg = decode_client(v.to_string().as_bytes()).unwrap();
        prop_assert_eq!(decode_client(&one_record(&m)).unwrap(), m);
    }

    #[test]
    fn server_messages_round_trip(v in server_json()) {
        let m: ServerMsg = decode_server(v.to_string().as_bytes()).unwrap();
        prop_assert_eq!(decode_server(&one_record(&m)).unwrap(), m);
    }

    #[test]
    fn arbitrary_json_decodes_or_fails_cleanly_and_round_trips(v in any_json()) {
        let bytes = v.to_string().into_bytes();
        if let Ok(m) = decode_client(&bytes) {
            prop_assert_eq!(decode_client(&one_record(&m)).unwrap(), m);
        }
        if let Ok(m) = decode_server(&bytes) {
            prop_assert_eq!(decode_server(&one_record(&m)).unwrap(), m);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_client(&bytes);
        let _ = decode_server(&bytes);
    }

    #[test]
    fn sanitized_text_is_inert_and_valid_text_is_unchanged(s in text()) {
        let clean = sanitize(&s);
        prop_assert!(!clean.chars().any(is_display_hazard), "{:?}", clean);
        if check_text(&s, usize::MAX, false).is_ok() {
            prop_assert_eq!(clean.as_ref(), s.as_str());
        }
    }

    #[test]
    fn a_sanitized_line_is_inert_with_short_blank_runs_and_no_trailing_blank(s in text()) {
        let line = sanitize_line(&s);
        prop_assert!(!line.chars().any(is_display_hazard), "{:?}", line);
        prop_assert!(!line.ends_with(is_blank), "{:?}", line);
        let longest = line.split(|c: char| !is_blank(c)).map(|r| r.chars().count()).max();
        prop_assert!(longest.unwrap_or(0) <= MAX_BLANK_RUN, "{:?}", line);
    }
}
