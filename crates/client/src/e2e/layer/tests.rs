//! The layer's unit tests: real MLS engines in temporary directories, messages in, what comes
//! out checked.

#![allow(clippy::unwrap_used)]
use super::*;
use chatao_proto::Member;

fn layer(dir: &std::path::Path) -> Layer {
    let keys = chatao_transport::Keypair::from_secret([7u8; 32]);
    let e2e = E2e::open(dir, keys.secret_bytes(), &keys.public().fingerprint()).unwrap();
    Layer::new(e2e, Nick::parse("alice").unwrap(), dir)
}

fn room() -> RoomName {
    RoomName::parse("#sec").unwrap()
}

fn is_warning(o: &Out) -> bool {
    matches!(o, Out::Ui(NetEvent::E2e { warning: true, .. }))
}

fn said(out: &[Out], needle: &str) -> bool {
    out.iter().any(|o| matches!(o, Out::Ui(NetEvent::E2e { text, .. }) if text.contains(needle)))
}

fn fp(n: u8) -> chatao_proto::Fingerprint {
    chatao_transport::Keypair::from_secret([n; 32]).public().fingerprint()
}

/// The layer of a client that created `#sec` and saw the server confirm it.
fn in_room(dir: &std::path::Path) -> Layer {
    in_room_open(dir, false)
}

/// As [`in_room`], the room open (`true`) or invite-only.
fn in_room_open(dir: &std::path::Path, open: bool) -> Layer {
    let mut l = layer(dir);
    l.from_ui(ClientMsg::Create { room: "#sec".into(), e2e: true, open });
    let me = Member {
        nick: Nick::parse("alice").unwrap(),
        fingerprint: fp(7),
        away: None,
        bot: false,
        op: false,
    };
    l.from_server(ServerMsg::Members {
        room: room(),
        members: vec![me],
        e2e: true,
        total: None,
        next: None,
        more: false,
    });
    l.drain();
    l
}

#[test]
fn text_for_an_e2e_room_leaves_encrypted_and_never_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    l.from_ui(ClientMsg::Say { cid: None, room: "#sec".into(), text: "top secret".into() });
    l.from_ui(ClientMsg::Say { cid: None, room: "#lobby".into(), text: "hello".into() });
    let out = l.drain();
    assert!(
        matches!(&out[0], Out::Net(ClientMsg::Sealed { cid: _, room, epoch: 0, body }) if room == "#sec" && !body.contains("secret"))
    );
    assert!(matches!(&out[1], Out::Net(ClientMsg::Say { room, .. }) if room == "#lobby"));
    assert_eq!(out.len(), 2);
}

fn sealed_echo(id: u64, body: String, cid: Option<Cid>) -> ServerMsg {
    ServerMsg::Sealed {
        room: room(),
        id,
        time: 5,
        from: Nick::parse("alice").unwrap(),
        epoch: 0,
        kind: SealedKind::Application,
        body,
        history: false,
        cid,
    }
}

#[test]
fn a_text_keeps_its_client_id_through_encryption_and_its_echo_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    l.from_ui(ClientMsg::Say { cid: Some(7), room: "#sec".into(), text: "first".into() });
    let Some(Out::Net(ClientMsg::Sealed { cid: Some(7), body, .. })) = l.drain().pop() else {
        panic!("the sealed text carries the cid")
    };
    // The echo of the very bytes sent: the engine knows it; the UI gets the cid back.
    l.from_server(sealed_echo(3, body, Some(7)));
    let out = l.drain();
    assert!(
        matches!(&out[..], [Out::Ui(NetEvent::Msg(ServerMsg::Message { cid: Some(7), text, .. }))] if text == "first"),
        "{out:?}"
    );
}

#[test]
fn an_echo_of_an_earlier_copy_of_a_re_sent_text_is_known_by_its_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    // A re-send after a reconnection: encrypted anew, while the server answers the repeated
    // id with the first copy's echo, which this engine never saw.
    l.from_ui(ClientMsg::Say { cid: Some(8), room: "#sec".into(), text: "again".into() });
    l.drain();
    let first_copy = B64.encode(b"bytes of a copy encrypted on the lost connection");
    l.from_server(sealed_echo(4, first_copy.clone(), Some(8)));
    let out = l.drain();
    assert!(
        matches!(&out[..], [Out::Ui(NetEvent::Msg(ServerMsg::Message { cid: Some(8), id: 4, text, .. }))] if text == "again"),
        "{out:?}"
    );
    // Logged as ours, once: the same echo again is a duplicate.
    l.from_server(sealed_echo(4, first_copy, Some(8)));
    assert!(l.drain().is_empty());
}

#[test]
fn plaintext_injected_by_the_server_into_an_e2e_room_is_dropped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    l.from_server(ServerMsg::Message {
        cid: None,
        room: room(),
        id: 9,
        time: 1,
        from: Nick::parse("mallory").unwrap(),
        kind: MessageKind::Normal,
        text: "trust me".into(),
        history: false,
    });
    let out = l.drain();
    assert_eq!(out.len(), 1);
    assert!(is_warning(&out[0]), "{out:?}");
}

/// Issue 19: `/invite` in a room the layer holds no group of (a plain room) is the
/// server's `invite`, not a key package fetch.
#[test]
fn an_invite_into_a_plain_room_goes_to_the_server_as_invite() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    l.from_ui(ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#plain".into()) });
    let out = l.drain();
    let invite = ClientMsg::Invite { room: "#plain".into(), nick: "bob".into() };
    assert!(matches!(&out[..], [Out::Net(m)] if *m == invite), "{out:?}");
}

#[test]
fn a_server_that_changes_who_a_nickname_is_gets_a_warning_and_no_add() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    let bob = Nick::parse("bob").unwrap();
    l.from_server(ServerMsg::Join { room: room(), nick: bob.clone(), fingerprint: fp(2) });
    l.from_ui(ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#sec".into()) });
    l.drain();
    l.from_server(ServerMsg::KeyPackage {
        nick: bob,
        fingerprint: fp(3),
        package: "AAAA".into(),
        room: Some(room()),
    });
    let out = l.drain();
    assert!(out.iter().all(|o| !matches!(o, Out::Net(_))), "no commit: {out:?}");
    let warnings = out.iter().filter(|o| is_warning(o)).count();
    assert!(warnings >= 1, "{out:?}");
}

#[test]
fn a_fingerprint_that_is_not_one_is_never_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    // A pin file line smuggled in a fingerprint: the record does not even decode, so the
    // layer never sees it.
    let forged = format!("{}\nmallory {}", fp(2), fp(3));
    let join =
        serde_json::json!({"type": "join", "room": "#sec", "nick": "bob", "fingerprint": forged});
    assert!(chatao_proto::decode_server(join.to_string().as_bytes()).is_err());
    let bob = Nick::parse("bob").unwrap();
    l.from_server(ServerMsg::Join { room: room(), nick: bob, fingerprint: fp(2) });
    l.drain();
    let pins = NickPins::load(dir.path());
    assert_eq!(pins.get("bob"), Some(fp(2).as_str()));
    assert_eq!(pins.get("mallory"), None);
}

/// Feeds our own commit back as the server would relay it.
fn echo_commit(l: &mut Layer, out: &[Out], id: u64) {
    let body = out
        .iter()
        .find_map(|o| match o {
            Out::Net(ClientMsg::Commit { body, .. }) => Some(body.clone()),
            _ => None,
        })
        .unwrap();
    l.from_server(ServerMsg::Sealed {
        cid: None,
        room: room(),
        id,
        time: 1,
        from: Nick::parse("alice").unwrap(),
        epoch: 0,
        kind: SealedKind::Commit,
        body,
        history: false,
    });
}

#[test]
fn text_typed_while_a_removal_is_in_flight_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    // bob's client, with its own state, offers a key package; alice adds him.
    let bob_dir = tempfile::tempdir().unwrap();
    let bob_keys = chatao_transport::Keypair::from_secret([2u8; 32]);
    let bob_fp = bob_keys.public().fingerprint();
    let mut bob = E2e::open(bob_dir.path(), bob_keys.secret_bytes(), &bob_fp).unwrap();
    let kp = B64.encode(&bob.key_packages(1).unwrap()[0]);
    let bob_nick = Nick::parse("bob").unwrap();
    l.from_ui(ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#sec".into()) });
    l.from_server(ServerMsg::KeyPackage {
        nick: bob_nick.clone(),
        fingerprint: bob_fp.clone(),
        package: kp,
        room: Some(room()),
    });
    let out = l.drain();
    echo_commit(&mut l, &out, 1);
    assert_eq!(l.e2e.members("#sec").len(), 2);
    l.drain();
    // alice removes bob: her client holds what she types meanwhile.
    l.request(Request::Remove { room: "#sec".into(), nick: bob_nick.to_string() });
    l.from_ui(ClientMsg::Say { cid: None, room: "#sec".into(), text: "after bob".into() });
    let out = l.drain();
    assert!(out.iter().any(|o| matches!(o, Out::Net(ClientMsg::Commit { removes, .. }) if removes == std::slice::from_ref(&bob_fp))));
    assert!(!out.iter().any(|o| matches!(o, Out::Net(ClientMsg::Sealed { .. }))), "held: {out:?}");
    echo_commit(&mut l, &out, 2);
    let out = l.drain();
    assert!(
        out.iter().any(|o| matches!(o, Out::Net(ClientMsg::Sealed { epoch: 2, .. }))),
        "sent once bob is out, at the new epoch: {out:?}"
    );
    assert_eq!(l.e2e.members("#sec").len(), 1);
}

/// alice's layer in `#sec` with bob (a real engine of his own) added.
fn with_bob(dir: &std::path::Path, bob_dir: &std::path::Path) -> (Layer, E2e, String) {
    let mut l = in_room(dir);
    let bob_keys = chatao_transport::Keypair::from_secret([2u8; 32]);
    let bob_fp = bob_keys.public().fingerprint();
    let mut bob = E2e::open(bob_dir, bob_keys.secret_bytes(), &bob_fp).unwrap();
    let kp = B64.encode(&bob.key_packages(1).unwrap()[0]);
    l.from_ui(ClientMsg::FetchKeyPackage { nick: "bob".into(), room: Some("#sec".into()) });
    l.from_server(ServerMsg::KeyPackage {
        nick: Nick::parse("bob").unwrap(),
        fingerprint: bob_fp.clone(),
        package: kp,
        room: Some(room()),
    });
    let out = l.drain();
    echo_commit(&mut l, &out, 1);
    l.drain();
    (l, bob, bob_fp.to_string())
}

#[test]
fn a_join_request_in_an_invite_only_room_adds_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    assert_eq!(l.e2e.is_open("#sec"), Some(false));
    let mallory = Nick::parse("mallory").unwrap();
    l.from_server(ServerMsg::JoinRequest { room: room(), nick: mallory, fingerprint: fp(9) });
    let out = l.drain();
    assert!(!out.iter().any(|o| matches!(o, Out::Net(_))), "no key package asked: {out:?}");
    assert!(said(&out, "not added"), "{out:?}");
}

#[test]
fn a_join_request_in_an_open_room_is_acted_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room_open(dir.path(), true);
    assert_eq!(l.e2e.is_open("#sec"), Some(true));
    let carol = Nick::parse("carol").unwrap();
    l.from_server(ServerMsg::JoinRequest { room: room(), nick: carol, fingerprint: fp(3) });
    let out = l.drain();
    assert!(
        out.iter().any(
            |o| matches!(o, Out::Net(ClientMsg::FetchKeyPackage { nick, .. }) if nick == "carol")
        ),
        "{out:?}"
    );
}

#[test]
fn a_forged_leave_or_a_kick_forgets_nothing_and_removes_nobody_but_our_part_does() {
    let (dir, bob_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut l, _bob, _) = with_bob(dir.path(), bob_dir.path());
    for (nick, reason) in [
        ("alice", LeaveReason::Part),
        ("alice", LeaveReason::Kicked),
        ("bob", LeaveReason::Part),
        ("bob", LeaveReason::Quit),
    ] {
        l.from_server(ServerMsg::Leave {
            room: room(),
            nick: Nick::parse(nick).unwrap(),
            reason,
            message: None,
        });
    }
    let out = l.drain();
    assert!(!out.iter().any(|o| matches!(o, Out::Net(ClientMsg::Commit { .. }))), "{out:?}");
    assert!(l.has_group("#sec"), "the group is kept");
    assert_eq!(l.e2e.members("#sec").len(), 2, "bob is still a member");
    l.from_server(ServerMsg::Error {
        cid: None,
        code: ErrorCode::NotInvited,
        message: "#sec is invite-only".into(),
        room: Some(room()),
    });
    assert!(l.has_group("#sec"));
    // The user's own /part is what forgets it.
    l.from_ui(ClientMsg::Part { room: "#sec".into(), reason: None });
    assert!(!l.has_group("#sec"));
    assert!(l.counts.get("#sec").is_none());
}

#[test]
fn a_refused_rejoin_is_known_by_the_room_the_error_names_never_by_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    l.drain();
    l.from_ui(ClientMsg::Join { room: "#sec".into(), since: None });
    l.drain();
    // Text that names the room but no `room`: not taken for the answer to the join.
    let refusal = |room| ServerMsg::Error {
        cid: None,
        code: ErrorCode::NotInvited,
        message: "#sec is invite-only: a member must /invite you".into(),
        room,
    };
    l.from_server(refusal(None));
    let out = l.drain();
    assert!(!said(&out, "no longer a member"), "{out:?}");
    assert!(out.iter().any(|o| matches!(o, Out::Ui(NetEvent::Msg(ServerMsg::Error { .. })))));
    // The same refusal naming the room is the join's answer: the group is kept, and said.
    l.from_server(refusal(Some(room())));
    let out = l.drain();
    assert!(said(&out, "no longer a member of #sec"), "{out:?}");
    assert!(l.has_group("#sec"));
}

#[test]
fn a_welcome_into_a_room_we_are_in_is_refused_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    let before = l.e2e.members("#sec");
    l.from_server(ServerMsg::Invited {
        room: room(),
        from: Nick::parse("mallory").unwrap(),
        id: 5,
        epoch: 1,
        body: "AAAA".into(),
    });
    let out = l.drain();
    assert!(out.iter().any(|o| is_warning(o) && said(std::slice::from_ref(o), "REFUSED")));
    assert_eq!(l.e2e.members("#sec"), before);
}

#[test]
fn a_message_is_shown_under_its_signer_never_under_the_servers_from() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    let show = |l: &mut Layer, id: u64, from: &str, sender_fp: &str| -> (String, bool) {
        l.out.clear();
        let nick = l.sender(&room(), id, &Nick::parse(from).unwrap(), sender_fp);
        (nick.to_string(), l.out.iter().any(is_warning))
    };
    // A key no nickname is pinned to: a name made of its fingerprint, a warning, and the
    // server's `from` is not pinned to it.
    let (shown, warned) = show(&mut l, 3, "carol", &fp(8));
    assert!(shown.starts_with("key-") && warned, "{shown}");
    assert_eq!(l.pins.get("carol"), None);
    // A key pinned to another name: shown under that name, with a warning.
    l.pins.check("bob", &fp(2));
    assert_eq!(show(&mut l, 4, "carol", &fp(2)), ("bob".to_owned(), true));
    // Agreement: no warning.
    assert_eq!(show(&mut l, 5, "bob", &fp(2)), ("bob".to_owned(), false));
}

#[test]
fn nicknames_are_pinned_only_in_an_e2e_context() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = in_room(dir.path());
    let lobby = RoomName::parse("#lobby").unwrap();
    l.from_server(ServerMsg::Join {
        room: lobby.clone(),
        nick: Nick::parse("dave").unwrap(),
        fingerprint: fp(4),
    });
    l.from_server(ServerMsg::Whois {
        nick: Nick::parse("erin").unwrap(),
        fingerprint: fp(5),
        rooms: vec![],
        away: None,
        since: 0,
        sessions: 1,
    });
    l.from_server(ServerMsg::Join {
        room: room(),
        nick: Nick::parse("frank").unwrap(),
        fingerprint: fp(6),
    });
    l.drain();
    let pins = NickPins::load(dir.path());
    assert_eq!(pins.get("dave"), None);
    assert_eq!(pins.get("erin"), None);
    assert_eq!(pins.get("frank"), Some(fp(6).as_str()), "written by the batch's flush");
}

#[test]
fn commits_state_the_rooms_commit_count_which_counts_every_commit_record() {
    let (dir, bob_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut l, _bob, _) = with_bob(dir.path(), bob_dir.path());
    assert_eq!(l.counts.get("#sec"), Some(1));
    // A garbage commit from a member: the MLS group does not move, the count does.
    l.from_server(ServerMsg::Sealed {
        cid: None,
        room: room(),
        id: 2,
        time: 1,
        from: Nick::parse("bob").unwrap(),
        epoch: 1,
        kind: SealedKind::Commit,
        body: B64.encode(b"garbage"),
        history: false,
    });
    l.drain();
    assert_eq!(l.e2e.epoch("#sec"), Some(1));
    assert_eq!(l.counts.get("#sec"), Some(2));
    l.request(Request::Remove { room: "#sec".into(), nick: "bob".into() });
    let out = l.drain();
    assert!(
        out.iter().any(|o| matches!(o, Out::Net(ClientMsg::Commit { epoch: 2, .. }))),
        "{out:?}"
    );
}
