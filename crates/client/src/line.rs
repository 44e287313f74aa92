//! Line mode, for scripts, bots and pipes: each stdin line is a message or a command, each
//! event one stdout line. At end of input the client makes sure everything it sent reached the
//! server (the server answers `quit` with `bye` only after handling all that came before),
//! then exits 0.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use chatao_proto::ClientMsg;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::command::{self, Input};
use crate::format::{self, Format};
use crate::net::{self, Closed, ConnectOptions, NetEvent, NetHandle};

/// How long, after end of input, the client waits for the server's goodbye (its messages may
/// still be paced out at the announced rate before that, which does not count).
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs line mode to the end. Returns the exit code: 0 after a clean goodbye, 1 if the server
/// disconnected us or the connection was lost. Connection failures are errors.
pub async fn run(opts: ConnectOptions, fmt: Format) -> Result<ExitCode> {
    let addr = format!("{}:{}", opts.host, opts.port);
    let (welcome, handle, mut events) = net::connect(&opts).await?;
    if let crate::trust::Trusted::NewlyPinned(file) = &welcome.trusted {
        eprintln!(
            "chatao: first connection to {addr}: its key {} is now pinned in {}",
            welcome.server_fingerprint,
            file.display()
        );
    }
    let mut out = tokio::io::stdout();
    let room = welcome_room();
    emit(&mut out, &format::welcome(fmt, &welcome, &addr)).await?;

    let (notices_tx, mut notices) = mpsc::channel::<String>(64);
    let mut input_done = false;
    tokio::spawn(read_stdin(handle, room, fmt, notices_tx));
    let mut goodbye_deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(NetEvent::Msg(msg)) => {
                    if let Some(line) = format::event(fmt, &msg) {
                        emit(&mut out, &line).await?;
                    }
                }
                Some(NetEvent::Unsent(msgs)) => {
                    eprintln!("chatao: {} message(s) could not be sent before the connection was lost", msgs.len());
                }
                Some(NetEvent::Closed(closed)) => {
                    emit(&mut out, &format::closed(fmt, &closed)).await?;
                    return Ok(match closed {
                        Closed::Bye { code: None, .. } => ExitCode::SUCCESS,
                        Closed::Bye { code: Some(code), reason } => {
                            eprintln!("chatao: disconnected by the server: {} ({code})", chatao_proto::sanitize(&reason));
                            ExitCode::FAILURE
                        }
                        Closed::Lost(reason) => {
                            eprintln!("chatao: {}", chatao_proto::sanitize(&reason));
                            ExitCode::FAILURE
                        }
                    });
                }
                None => bail!("the network task ended unexpectedly"),
            },
            notice = notices.recv(), if !input_done => match notice {
                Some(line) => emit(&mut out, &line).await?,
                None => {
                    input_done = true;
                    goodbye_deadline = Some(tokio::time::Instant::now() + GOODBYE_TIMEOUT);
                }
            },
            _ = sleep_until_opt(goodbye_deadline) => {
                eprintln!("chatao: the server did not say goodbye within {}s", GOODBYE_TIMEOUT.as_secs());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

fn welcome_room() -> String {
    chatao_proto::DEFAULT_ROOM.to_owned()
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn emit(out: &mut tokio::io::Stdout, line: &str) -> Result<()> {
    out.write_all(line.as_bytes()).await?;
    out.write_all(b"\n").await?;
    out.flush().await?;
    Ok(())
}

/// Reads stdin to its end, turning lines into messages. Sending waits while the outbox is full,
/// so input is read no faster than the server accepts it. At the end (or on `/quit`) it sends
/// `quit`; dropping `notices` tells the main loop that input is over.
async fn read_stdin(
    handle: NetHandle,
    mut room: String,
    fmt: Format,
    notices: mpsc::Sender<String>,
) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut reason = None;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                let _ = notices.send(format::notice(fmt, &format!("cannot read input: {e}"))).await;
                break;
            }
        };
        let input = match command::parse(&line) {
            Ok(None) => continue,
            Ok(Some(input)) => input,
            Err(e) => {
                let _ = notices.send(format::notice(fmt, &e.to_string())).await;
                continue;
            }
        };
        let msg = match input {
            Input::Quit(r) => {
                reason = r;
                break;
            }
            Input::Help => {
                for l in command::help_lines() {
                    let _ = notices.send(format::notice(fmt, &l)).await;
                }
                continue;
            }
            Input::Switch(r) => {
                room = r;
                let _ = notices.send(format::notice(fmt, &format!("current room: {room}"))).await;
                continue;
            }
            Input::Join(ref r) | Input::Create { room: ref r, .. } => {
                // The most recently joined room becomes the current one, as in the TUI.
                room = r.clone();
                input.to_msg(&room)
            }
            Input::Remove(_) | Input::Safety => {
                if let Some(req) = input.to_request(&room)
                    && handle.request(req).await.is_err()
                {
                    let text = "end-to-end encrypted rooms are not available on this connection";
                    let _ = notices.send(format::notice(fmt, text)).await;
                }
                continue;
            }
            other => other.to_msg(&room),
        };
        let Some(msg) = msg else { continue };
        if handle.send(msg).await.is_err() {
            return;
        }
    }
    let _ = handle.send(ClientMsg::Quit { reason }).await;
}
