//! Admission: which new connections get a session, which are told why not, and which are
//! closed at once. Decided at `accept`, before a byte is read, from the peer's address alone.
//!
//! Three limits, checked in this order:
//! 1. the attempt rate of the address: a token bucket per address (`chatao_proto`'s
//!    [`TokenBucket`], the one behind every rate in Chatao), [`HANDSHAKE_BURST`] attempts at once
//!    then [`HANDSHAKES_PER_MINUTE`]; every accepted TCP connection is an attempt;
//! 2. the connections the address holds, handshakes in progress included
//!    ([`MAX_CONNECTIONS_PER_IP`]);
//! 3. the connections the whole server holds (`max_connections`).
//!
//! Refusing with a reason. Before the handshake nothing can be encrypted or authenticated: a
//! cleartext "server full" would be indistinguishable from an attacker's. So the server completes
//! the handshake and sends `bye` with a sentence ([`explain`]): code `server_full` for the two
//! caps, `rate_limited` for the attempt rate. Each explanation costs a handshake, so they are
//! bounded twice: at most `refusal_slots` ([`REFUSAL_SLOTS`]) in progress, past which refused
//! connections are closed without a word; and an address over its attempt rate is told once,
//! after which its attempts are closed at once until it has earned one again.
//!
//! Addresses: an IPv4 address (or an IPv4-mapped IPv6 one) counts as itself; an IPv6 address
//! counts as its /64, since one subscriber usually holds a whole /64 and could otherwise multiply
//! its allowance by 2^64.
//!
//! [`HANDSHAKE_BURST`]: crate::limits::HANDSHAKE_BURST
//! [`HANDSHAKES_PER_MINUTE`]: crate::limits::HANDSHAKES_PER_MINUTE
//! [`MAX_CONNECTIONS_PER_IP`]: crate::limits::MAX_CONNECTIONS_PER_IP
//! [`REFUSAL_SLOTS`]: crate::limits::REFUSAL_SLOTS

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatao_proto::{ErrorCode, ServerMsg, TokenBucket, encode};
use chatao_transport::{HandshakeError, Keypair, TransportError};
use parking_lot::{Mutex, MutexGuard};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;

use crate::config::Config;
use crate::limits::{CLOSE_LINGER, MAX_RECORD_BYTES, TRACKED_ADDRESSES};

/// Where connections come from, as admission counts them: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The source `ip` belongs to.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    Source(IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))))
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server holds `max_connections`.
    ServerFull,
    /// The address holds `max_connections_per_ip`.
    AddressFull,
    /// The address is over its attempt rate.
    TooManyAttempts,
}

impl Refused {
    /// The code the client receives in `bye`.
    pub fn code(self) -> ErrorCode {
        match self {
            Refused::ServerFull | Refused::AddressFull => ErrorCode::ServerFull,
            Refused::TooManyAttempts => ErrorCode::RateLimited,
        }
    }
}

/// The decision about one new connection.
#[derive(Debug)]
pub enum Verdict {
    /// Admitted: the session holds the ticket for as long as it runs.
    Admit(Ticket),
    /// Refused with a reason: complete the handshake and send `bye` ([`explain`]), holding the
    /// refusal (and with it a refusal slot) until done.
    Explain(Refusal),
    /// Refused without a word: close the socket at once.
    Close(Refused),
}

/// An admitted connection's place in the counts; dropping it gives the place back.
#[derive(Debug)]
pub struct Ticket {
    shared: Arc<Shared>,
    source: Source,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.open.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.open.remove(&self.source);
            }
        }
    }
}

/// A refusal to explain; holds one refusal slot until dropped.
#[derive(Debug)]
pub struct Refusal {
    pub why: Refused,
    /// The sentence sent with `bye`.
    pub reason: String,
    shared: Arc<Shared>,
}

impl Drop for Refusal {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.refusing = st.refusing.saturating_sub(1);
    }
}

/// The admission counts, shared by the accept loop and every ticket. Clone it freely.
#[derive(Debug, Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max_total: usize,
    /// 0: no cap per address.
    max_per_source: usize,
    /// `None`: no attempt rate.
    rate: Option<Rate>,
    refusal_slots: usize,
    /// Most addresses whose attempt rate is remembered (see [`TRACKED_ADDRESSES`]).
    tracked: usize,
    /// A blocking (parking_lot) mutex on purpose: every section is a few map operations, never held across an
    /// `.await`, and the accept loop is its main user.
    state: Mutex<State>,
}

/// The attempt rate: each address gets a [`TokenBucket`] of `burst` attempts that gives back
/// `per_minute` a minute.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_minute: u32,
    burst: u32,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    refusing: usize,
    /// Connections held per source; an entry lives only while its count is above zero, so this
    /// map is never larger than the number of connections.
    open: HashMap<Source, usize>,
    /// Attempt buckets per source, at most `tracked` of them.
    attempts: HashMap<Source, Attempts>,
}

#[derive(Debug)]
struct Attempts {
    bucket: TokenBucket,
    /// Whether this source was told it is over the rate since it last had an attempt granted.
    told: bool,
}

enum Attempt {
    Granted,
    /// Over the rate; `first` if this source has not been told since its last granted attempt.
    Denied {
        first: bool,
    },
}

impl Admission {
    /// Admission with the limits in `config`.
    pub fn new(config: &Config) -> Admission {
        Admission::with_tracked(config, TRACKED_ADDRESSES)
    }

    fn with_tracked(config: &Config, tracked: usize) -> Admission {
        let rate = (config.handshakes_per_minute > 0).then_some(Rate {
            per_minute: config.handshakes_per_minute,
            burst: config.handshake_burst,
        });
        Admission {
            shared: Arc::new(Shared {
                max_total: config.max_connections,
                max_per_source: config.max_connections_per_ip,
                rate,
                refusal_slots: config.refusal_slots,
                tracked: tracked.max(1),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Decides about a connection from `ip` arriving at `now`, and counts it: an attempt
    /// against the address's rate in every case, a connection if admitted.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Verdict {
        let source = Source::of(ip);
        let sh = &self.shared;
        let mut st = sh.lock();
        let why = match st.attempt(source, now, sh.rate, sh.tracked) {
            Attempt::Denied { first: false } => return Verdict::Close(Refused::TooManyAttempts),
            Attempt::Denied { first: true } => Refused::TooManyAttempts,
            Attempt::Granted => {
                let open = st.open.get(&source).copied().unwrap_or(0);
                if sh.max_per_source > 0 && open >= sh.max_per_source {
                    Refused::AddressFull
                } else if st.total >= sh.max_total {
                    Refused::ServerFull
                } else {
                    st.total += 1;
                    *st.open.entry(source).or_insert(0) += 1;
                    return Verdict::Admit(Ticket { shared: sh.clone(), source });
                }
            }
        };
        if st.refusing >= sh.refusal_slots {
            if why == Refused::TooManyAttempts {
                // Not told after all: the next attempt may be.
                if let Some(a) = st.attempts.get_mut(&source) {
                    a.told = false;
                }
            }
            return Verdict::Close(why);
        }
        st.refusing += 1;
        let reason = match why {
            Refused::ServerFull => "the server is full; try again later".to_owned(),
            Refused::AddressFull => format!(
                "too many connections from your address (the limit is {}); \
                 close one and try again",
                sh.max_per_source
            ),
            Refused::TooManyAttempts => format!(
                "too many connection attempts from your address (the limit is {} a minute); \
                 wait and try again",
                sh.rate.map_or(0, |r| r.per_minute)
            ),
        };
        Verdict::Explain(Refusal { why, reason, shared: sh.clone() })
    }

    /// Connections admitted and not yet ended.
    pub fn connections(&self) -> usize {
        self.shared.lock().total
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Not poisoned by a panic (parking_lot): every section leaves the counts consistent
        // before anything that could panic, so the accept loop goes on.
        self.state.lock()
    }
}

impl State {
    /// Charges one attempt to `source`.
    fn attempt(
        &mut self,
        source: Source,
        now: Instant,
        rate: Option<Rate>,
        tracked: usize,
    ) -> Attempt {
        let Some(rate) = rate else { return Attempt::Granted };
        if !self.attempts.contains_key(&source) {
            self.make_room(now, tracked);
        }
        let a = self.attempts.entry(source).or_insert_with(|| Attempts {
            bucket: TokenBucket::per(rate.per_minute, Duration::from_secs(60), rate.burst, now),
            told: false,
        });
        if !a.bucket.try_take(now) {
            let first = !a.told;
            a.told = true;
            return Attempt::Denied { first };
        }
        a.told = false;
        Attempt::Granted
    }

    /// Overflow policy of the attempt map, when it holds `tracked` sources: forget every source
    /// whose bucket is full (forgetting it changes nothing), and if none is, the one nearest to
    /// full (it gets a full bucket back: the price of bounded memory).
    fn make_room(&mut self, now: Instant, tracked: usize) {
        if self.attempts.len() < tracked {
            return;
        }
        self.attempts.retain(|_, a| !a.bucket.is_full(now));
        if self.attempts.len() < tracked {
            return;
        }
        let nearest = self.attempts.iter().min_by_key(|(_, a)| a.bucket.full_at()).map(|(s, _)| *s);
        if let Some(source) = nearest {
            self.attempts.remove(&source);
        }
    }
}

/// Why an explanation did not reach the client. Only logged: the connection was refused anyway.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("could not send bye: {0}")]
    Transport(#[from] TransportError),
    #[error("the client did not finish the handshake in time")]
    TimedOut,
}

/// Completes the handshake on `stream` within `limit`, sends `bye` with the refusal's code and
/// reason, and closes; in between it reads and discards what the client sends (its `hello`,
/// typically) for at most [`CLOSE_LINGER`], so that the close does not become a reset that
/// destroys the `bye` in flight. The refusal slot is given back when this returns.
pub async fn explain<S>(
    stream: S,
    keys: &Keypair,
    refusal: Refusal,
    limit: Duration,
) -> Result<(), ExplainError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = timeout(limit, chatao_transport::accept(stream, keys))
        .await
        .map_err(|_| ExplainError::TimedOut)??;
    conn.set_max_record(MAX_RECORD_BYTES);
    let bye = ServerMsg::Bye { code: Some(refusal.why.code()), reason: refusal.reason.clone() };
    timeout(limit, async {
        conn.write_record(&encode(&bye)).await?;
        conn.shutdown().await
    })
    .await
    .map_err(|_| ExplainError::TimedOut)??;
    let _ =
        timeout(CLOSE_LINGER, async { while let Ok(Some(_)) = conn.read_record().await {} }).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::Ipv4Addr;

    fn config(adjust: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config::new(Keypair::from_secret([7; 32]), std::env::temp_dir());
        adjust(&mut c);
        c
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn admitted(v: Verdict) -> Ticket {
        match v {
            Verdict::Admit(t) => t,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    fn explained(v: &Verdict) -> Option<Refused> {
        match v {
            Verdict::Explain(r) => Some(r.why),
            _ => None,
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of(ip(7)));
    }

    #[test]
    fn per_address_cap_refuses_with_server_full_and_frees_on_drop() {
        let adm = Admission::new(&config(|c| c.max_connections_per_ip = 2));
        let now = Instant::now();
        let t1 = admitted(adm.admit(ip(1), now));
        let _t2 = admitted(adm.admit(ip(1), now));
        let v = adm.admit(ip(1), now);
        assert_eq!(explained(&v), Some(Refused::AddressFull));
        let Verdict::Explain(r) = v else { unreachable!() };
        assert_eq!(r.why.code(), ErrorCode::ServerFull);
        assert!(r.reason.contains("limit is 2"), "{}", r.reason);
        // Another address is not affected.
        let _t3 = admitted(adm.admit(ip(2), now));
        drop(t1);
        let _t4 = admitted(adm.admit(ip(1), now));
        assert_eq!(adm.connections(), 3);
    }

    #[test]
    fn total_cap_refuses_everyone() {
        let adm = Admission::new(&config(|c| c.max_connections = 1));
        let now = Instant::now();
        let t = admitted(adm.admit(ip(1), now));
        assert_eq!(explained(&adm.admit(ip(2), now)), Some(Refused::ServerFull));
        drop(t);
        admitted(adm.admit(ip(2), now));
    }

    #[test]
    fn attempts_are_rate_limited_per_address_told_once_then_closed() {
        let adm = Admission::new(&config(|c| {
            c.handshakes_per_minute = 6;
            c.handshake_burst = 3;
        }));
        let t0 = Instant::now();
        for _ in 0..3 {
            admitted(adm.admit(ip(1), t0));
        }
        let told = adm.admit(ip(1), t0);
        assert_eq!(explained(&told), Some(Refused::TooManyAttempts));
        let Verdict::Explain(r) = told else { unreachable!() };
        assert_eq!(r.why.code(), ErrorCode::RateLimited);
        assert!(r.reason.contains("6 a minute"), "{}", r.reason);
        assert!(matches!(adm.admit(ip(1), t0), Verdict::Close(Refused::TooManyAttempts)));
        assert!(matches!(adm.admit(ip(1), t0), Verdict::Close(Refused::TooManyAttempts)));
        // Others are not affected.
        admitted(adm.admit(ip(2), t0));
        // One attempt comes back every 10 s.
        let t1 = t0 + Duration::from_secs(10);
        admitted(adm.admit(ip(1), t1));
        assert!(explained(&adm.admit(ip(1), t1)).is_some(), "told again after a grant");
        // A long pause refills the burst, and no more.
        let t2 = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            admitted(adm.admit(ip(1), t2));
        }
        assert!(!matches!(adm.admit(ip(1), t2), Verdict::Admit(_)));
    }

    #[test]
    fn refusal_slots_bound_explanations_then_refusals_are_silent() {
        let adm = Admission::new(&config(|c| {
            c.max_connections = 0;
            c.refusal_slots = 2;
        }));
        let now = Instant::now();
        let r1 = adm.admit(ip(1), now);
        let _r2 = adm.admit(ip(2), now);
        assert!(explained(&r1).is_some());
        assert!(matches!(adm.admit(ip(3), now), Verdict::Close(Refused::ServerFull)));
        drop(r1);
        assert_eq!(explained(&adm.admit(ip(3), now)), Some(Refused::ServerFull));
    }

    #[test]
    fn a_rate_limited_address_without_a_slot_is_told_later() {
        let adm = Admission::new(&config(|c| {
            c.handshakes_per_minute = 1;
            c.handshake_burst = 1;
            c.refusal_slots = 1;
        }));
        let now = Instant::now();
        admitted(adm.admit(ip(1), now));
        let slot_taker = adm.admit(ip(1), now);
        assert!(explained(&slot_taker).is_some());
        admitted(adm.admit(ip(2), now));
        assert!(matches!(adm.admit(ip(2), now), Verdict::Close(Refused::TooManyAttempts)));
        drop(slot_taker);
        assert_eq!(explained(&adm.admit(ip(2), now)), Some(Refused::TooManyAttempts));
    }

    #[test]
    fn the_attempt_map_stays_bounded_forgetting_full_buckets_first() {
        let c = config(|c| {
            c.handshakes_per_minute = 60;
            c.handshake_burst = 2;
        });
        let adm = Admission::with_tracked(&c, 4);
        let t0 = Instant::now();
        // Address 1 exhausts its burst; 2..=4 use one attempt each.
        admitted(adm.admit(ip(1), t0));
        admitted(adm.admit(ip(1), t0));
        for n in 2..=4 {
            admitted(adm.admit(ip(n), t0));
        }
        // A flood of new addresses, each arriving after the earlier ones have refilled
        // partially: the map never grows past 4 entries.
        for n in 5..=200u8 {
            admitted(adm.admit(ip(n), t0 + Duration::from_millis(u64::from(n))));
            assert!(adm.shared.lock().attempts.len() <= 4);
        }
        // Once every bucket is full again, the idle ones are forgotten in one sweep.
        let later = t0 + Duration::from_secs(60);
        admitted(adm.admit(ip(250), later));
        assert_eq!(adm.shared.lock().attempts.len(), 1);
    }

    #[test]
    fn zero_means_unlimited_for_the_per_address_cap_and_the_rate() {
        let adm = Admission::new(&config(|c| {
            c.max_connections_per_ip = 0;
            c.handshakes_per_minute = 0;
        }));
        let now = Instant::now();
        let tickets: Vec<Ticket> = (0..500).map(|_| admitted(adm.admit(ip(1), now))).collect();
        assert_eq!(adm.connections(), 500);
        drop(tickets);
        assert_eq!(adm.connections(), 0);
        assert!(adm.shared.lock().open.is_empty());
    }
}
