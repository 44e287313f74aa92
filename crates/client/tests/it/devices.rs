//! One person on two devices, as a user runs it: two `chatao` processes in line mode with the
//! same key (copied to the second device's key directory) online at once against the real
//! server, both receiving everything; one quits, the other stays, and the room never sees
//! the person leave until the last device goes.
#![allow(clippy::unwrap_used)]

use crate::common::wait_line;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chatao_proto::{ClientMsg, ServerMsg};
use chatao_testkit::{TestClient, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

const LIMIT: Duration = Duration::from_secs(30);

fn chatao(key_dir: &Path, addr: SocketAddr, nick: &str) -> Child {
    let target = [addr.ip().to_string(), addr.port().to_string()];
    chatao_testkit::chatao(env!("CARGO_BIN_EXE_chatao"), &[&target[0], &target[1]], nick, key_dir)
        .spawn()
        .unwrap()
}

/// `alice`'s number of sessions, as bob's whois says.
async fn sessions(bob: &mut TestClient) -> u32 {
    bob.send(&ClientMsg::Whois { nick: "alice".into() }).await.unwrap();
    match bob.expect("whois", |m| matches!(m, ServerMsg::Whois { .. })).await.unwrap() {
        ServerMsg::Whois { sessions, .. } => sessions,
        _ => unreachable!(),
    }
}

/// Asks bob's whois until alice is on `n` sessions (or 5 s of asking went by); returns the last
/// count.
async fn until_sessions(bob: &mut TestClient, n: u32) -> u32 {
    let mut last = 0;
    for _ in 0..500 {
        last = sessions(bob).await;
        if last == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last
}

#[tokio::test]
async fn two_chatao_processes_with_one_key_both_receive_everything_and_one_quits() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();

    let (laptop_keys, phone_keys) = (dir.path().join("laptop"), dir.path().join("phone"));
    let mut laptop = chatao(&laptop_keys, server.addr, "alice");
    let mut laptop_out = BufReader::new(laptop.stdout.take().unwrap()).lines();
    wait_line(&mut laptop_out, "connected to").await;
    // The second device has the same key: the key directory's files, copied.
    std::fs::create_dir_all(&phone_keys).unwrap();
    for entry in std::fs::read_dir(&laptop_keys).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), phone_keys.join(entry.file_name())).unwrap();
        }
    }
    let mut phone = chatao(&phone_keys, server.addr, "alice");
    let mut phone_out = BufReader::new(phone.stdout.take().unwrap()).lines();
    wait_line(&mut phone_out, "connected to").await;
    let n = until_sessions(&mut bob, 2).await;
    assert_eq!(n, 2, "both devices online at once");

    bob.say("hi both").await.unwrap();
    wait_line(&mut laptop_out, "<bob> hi both").await;
    wait_line(&mut phone_out, "<bob> hi both").await;
    bob.send(&ClientMsg::Msg { cid: None, to: "alice".into(), text: "psst".into() }).await.unwrap();
    wait_line(&mut laptop_out, "*bob -> alice* psst").await;
    wait_line(&mut phone_out, "*bob -> alice* psst").await;

    // What the laptop says, publicly or privately, the phone shows as alice's.
    let mut laptop_in = laptop.stdin.take().unwrap();
    laptop_in.write_all(b"from the laptop\n/msg bob in private\n").await.unwrap();
    wait_line(&mut phone_out, "<alice> from the laptop").await;
    wait_line(&mut phone_out, "*alice -> bob* in private").await;
    bob.expect(
        "the private reply",
        |m| matches!(m, ServerMsg::Private { text, .. } if text == "in private"),
    )
    .await
    .unwrap();

    // The laptop quits; the phone stays, and the room is not told alice left.
    laptop_in.write_all(b"/quit\n").await.unwrap();
    let status = tokio::time::timeout(LIMIT, laptop.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(until_sessions(&mut bob, 1).await, 1, "the laptop's session ended");
    bob.say("still there?").await.unwrap();
    let mut seen = vec![];
    loop {
        let m = bob.recv().await.unwrap();
        if matches!(&m, ServerMsg::Message { text, .. } if text == "still there?") {
            break;
        }
        seen.push(m);
    }
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "alice")),
        "{seen:?}"
    );
    wait_line(&mut phone_out, "<bob> still there?").await;
    let mut phone_in = phone.stdin.take().unwrap();
    phone_in.write_all(b"yes, on the phone\n").await.unwrap();
    bob.expect_text("yes, on the phone").await.unwrap();

    // The last device goes: now alice leaves.
    phone_in.write_all(b"/quit\n").await.unwrap();
    tokio::time::timeout(LIMIT, phone.wait()).await.unwrap().unwrap();
    bob.expect(
        "alice leaves",
        |m| matches!(m, ServerMsg::Leave { nick, .. } if nick.as_str() == "alice"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_second_key_added_with_device_add_chats_as_the_same_person() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bob = TestClient::connect(server.addr, "bob").await.unwrap();
    let (laptop_keys, phone_keys) = (dir.path().join("laptop"), dir.path().join("phone"));

    // The new device prints its fingerprint before it ever connects.
    let out =
        chatao_testkit::chatao(env!("CARGO_BIN_EXE_chatao"), &[], "--fingerprint", &phone_keys)
            .output()
            .await
            .unwrap();
    assert!(out.status.success(), "{out:?}");
    let phone_fp = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(phone_fp.starts_with("SHA256:"), "{phone_fp}");

    let mut laptop = chatao(&laptop_keys, server.addr, "alice");
    let mut laptop_out = BufReader::new(laptop.stdout.take().unwrap()).lines();
    wait_line(&mut laptop_out, "connected to").await;
    let mut laptop_in = laptop.stdin.take().unwrap();
    laptop_in.write_all(format!("/device add {phone_fp} phone\n").as_bytes()).await.unwrap();
    let line = wait_line(&mut laptop_out, "alice's keys:").await;
    assert!(line.contains(&phone_fp) && line.contains("\"phone\""), "{line}");

    let mut phone = chatao(&phone_keys, server.addr, "alice");
    let mut phone_out = BufReader::new(phone.stdout.take().unwrap()).lines();
    wait_line(&mut phone_out, "connected to").await;
    let n = until_sessions(&mut bob, 2).await;
    assert_eq!(n, 2, "both keys online as alice");
    laptop_in.write_all(b"/msg bob sent from the laptop\n").await.unwrap();
    wait_line(&mut phone_out, "*alice -> bob* sent from the laptop").await;
    let mut phone_in = phone.stdin.take().unwrap();
    phone_in.write_all(b"hello from the phone\n/device list\n").await.unwrap();
    let m = bob.expect_text("hello from the phone").await.unwrap();
    assert!(matches!(m, ServerMsg::Message { from, .. } if from.as_str() == "alice"));
    let line = wait_line(&mut phone_out, "alice's keys:").await;
    assert!(line.contains("first key") && line.contains(&phone_fp), "{line}");

    // Revoked from the laptop: the phone's session ends.
    laptop_in.write_all(format!("/device remove {phone_fp}\n").as_bytes()).await.unwrap();
    wait_line(&mut phone_out, "removed from alice").await;
    laptop_in.write_all(b"/quit\n").await.unwrap();
    tokio::time::timeout(LIMIT, laptop.wait()).await.unwrap().unwrap();
}
