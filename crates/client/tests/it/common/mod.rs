//! Helpers shared by the client's integration tests (tests/it: the modules of its one test binary).
#![allow(clippy::unwrap_used, dead_code)]

pub mod tmux;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy that can cut every connection through it and refuse new ones.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().unwrap().push(link);
            }
        });
        Proxy { addr, up, links, accept }
    }

    /// Breaks every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn mend(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// A hand-made server for tests of what a hostile one can do: accepts one connection on
/// `listener` with the fixed key `key`, shakes hands and reads the client's `hello`. Returns
/// the connection and the nick the client asked for; the caller writes whatever it likes.
pub async fn accept_hello(
    listener: &TcpListener,
    key: u8,
) -> (chatao_transport::Connection<TcpStream>, String) {
    let (stream, _) = listener.accept().await.unwrap();
    let mut conn =
        chatao_transport::accept(stream, &chatao_testkit::fixed_keypair(key)).await.unwrap();
    let hello = conn.read_record().await.unwrap().unwrap();
    let chatao_proto::ClientMsg::Hello { nick } = chatao_proto::decode_client(&hello).unwrap()
    else {
        panic!("the first record is not hello");
    };
    (conn, nick)
}

/// Reads a child's standard output until a line contains `needle`, within 30 s, returning it.
pub async fn wait_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    needle: &str,
) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("stdout ended");
            if line.contains(needle) {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line containing {needle:?}"))
}
