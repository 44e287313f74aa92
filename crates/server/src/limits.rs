//! Every limit the server enforces, in one place, each with its unit and its reason.
//! `Config` starts from these defaults; flags and the config file may change the ones marked
//! configurable.

use std::time::Duration;

/// Time a new connection has to finish the Noise handshake and send `hello`. Slowloris
/// connections, which open a socket and dribble bytes, are closed when it runs out.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to finish a frame or message once it has started sending it. A client
/// that sends part of one and stalls is closed with `timeout` after this, instead of holding
/// its buffers until the idle timeout.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Silence after which the server sends a `ping`.
pub const PING_AFTER: Duration = Duration::from_secs(30);

/// Silence after which the server gives up on a client (it had `PING_AFTER` of that to answer
/// a ping).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Time one batched write to a client may take. A client whose socket does not drain in this
/// time is disconnected rather than left to hold memory.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a shutting-down server waits for sessions to say goodbye before it returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Messages queued for one client before it counts as too slow. Overflow policy: the client is
/// disconnected with `too_slow` (it can reconnect and catch up); the room never waits for it.
pub const MAILBOX_CAPACITY: usize = 4096;

/// Most queued messages written in one batch (one `write`, few sealed frames).
pub const WRITE_BATCH: usize = 256;

/// Largest record (one JSON message, its newline included) a client may send, in bytes. A
/// longer one that still ends within [`MAX_RECORD_DISCARD`] is refused with `too_long` and
/// skipped, and the session goes on: the frames were authentic, only the message was too big.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// Longest record the server reads to its end in order to skip it (see [`MAX_RECORD_BYTES`]).
/// A client that sends more without a newline gets `bye` `too_long` and is disconnected: no
/// record boundary is in sight, and buffering further would let one connection hold memory.
pub const MAX_RECORD_DISCARD: usize = 64 * 1024;

/// Default longest message text, in UTF-8 bytes (configurable). Longer text is refused with
/// `too_long`; the session goes on.
pub const MAX_TEXT_BYTES: u32 = 4000;

/// Default steady message rate per connection, per second (configurable).
pub const RATE_PER_SEC: u32 = 5;

/// Default burst of messages allowed above the steady rate (configurable).
pub const BURST: u32 = 20;

/// Fakelag: how much backlog, in seconds of messages at the announced rate, a client over its
/// token bucket may build up. A charged command that finds no token is not refused: it waits
/// in the session's backlog (with everything the client sends after it, in order) and is
/// handled when its token is due, so the client is simply read more slowly. A backlog of
/// `rate_per_sec` x this many records means the client stayed over the rate for about this
/// long: the session ends with `bye` `rate_limited`, saying how many messages were waiting.
pub const FAKELAG_BACKLOG_SECS: u32 = 30;

/// Fakelag: most bytes of records held in one session's backlog. Overflow policy: the socket
/// is not read until the backlog has room again (the client's writes wait in the kernel's
/// buffers and then in the client); the session goes on. Bounds a throttled session's memory
/// whatever the size of its records.
pub const FAKELAG_BACKLOG_BYTES: usize = 128 * 1024;

/// Output budget: bytes per second of replies a connection may ask for (configurable). Every
/// reply to a client's own request (history and join replays, `list`, `who`, `whois`, errors…)
/// is charged by its encoded size; a reply that overdraws the budget still goes out whole, and
/// the session then handles nothing more from that client (it waits in the fakelag backlog, in
/// order) until the budget is positive again. Live traffic (other people's messages) is not
/// charged. Why 256 KiB/s: `history` cost 28,863 bytes out per byte in, and 16 connections
/// drove 188 MB/s; with this budget they get 4 MiB/s (a full IP's 64 connections 16 MiB/s),
/// while the largest single reply (HISTORY_MAX sealed messages, about 7 MB) is paid back in
/// under FAKELAG_BACKLOG_SECS, so a client sending at the announced rate meanwhile is never
/// disconnected for it.
pub const OUTPUT_BYTES_PER_SEC: u64 = 256 * 1024;

/// Output budget: burst in bytes (configurable). A legitimate catch-up of HISTORY_MAX messages
/// of MAX_TEXT_BYTES (about 2 MB encoded) fits it and goes out without any wait; ordinary
/// join replays (HISTORY_ON_JOIN messages) are a tenth of it.
pub const OUTPUT_BURST_BYTES: u64 = 2 * 1024 * 1024;

/// Default cap on simultaneous connections (configurable). Past it new connections are
/// refused.
pub const MAX_CONNECTIONS: usize = 20_000;

/// Default cap on simultaneous connections from one address (configurable); IPv6 addresses
/// count per /64, the block one subscriber usually holds. High enough for an office or a campus
/// behind one NAT address, low enough that a single host cannot take the whole server. Past it
/// new connections from that address are refused with `server_full`.
pub const MAX_CONNECTIONS_PER_IP: usize = 64;

/// Default steady rate of connection attempts one address may make, per minute (configurable;
/// 0 means unlimited). Every accepted TCP connection counts, before any byte is read: each one
/// may cost the server a handshake (three X25519 operations), so a handshake flood from one
/// address is held to this pace instead of taking the CPU.
pub const HANDSHAKES_PER_MINUTE: u32 = 60;

/// Default burst of connection attempts above the steady rate (configurable): an address may
/// fill its [`MAX_CONNECTIONS_PER_IP`] at once, as a NAT full of clients does after a restart.
pub const HANDSHAKE_BURST: u32 = 64;

/// Addresses whose attempt rate the server remembers at once. Overflow policy: the addresses
/// whose allowance is full anyway are forgotten first (that changes nothing), then the one
/// nearest to full; memory stays bounded whatever the number of attacking addresses.
pub const TRACKED_ADDRESSES: usize = 16_384;

/// Default number of refusals explained at once (configurable). A refusal before the handshake
/// cannot be encrypted, so the server completes the handshake to send `bye` with a reason; that
/// costs as much as admitting the client. Past this many in progress, refused connections are
/// closed without a word.
pub const REFUSAL_SLOTS: usize = 32;

/// After a session's or a refusal's last words (`bye`), time the server goes on reading (and
/// discarding) what the client sends before it closes: closing with unread input makes the
/// kernel send a TCP reset, which can destroy the `bye` before the client reads it.
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Pause after an `accept` error (out of file descriptors, say) before accepting again; it
/// doubles while the errors go on, up to [`ACCEPT_BACKOFF_MAX`].
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Longest pause between two `accept` attempts while they keep failing.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Default number of messages replayed when joining a room (configurable).
pub const HISTORY_ON_JOIN: usize = 50;

/// Most messages sent for one `history` request; a client that missed more asks again from the
/// last id it received.
pub const HISTORY_MAX: usize = 500;

/// Default messages kept per room (configurable; 0 keeps everything).
pub const RETENTION_MESSAGES: u64 = 100_000;

/// Longest topic, quit or part reason, and away reason, in bytes.
pub const MAX_REASON_BYTES: usize = 300;

/// Longest ban or mute with an end: 36,500 days (about 100 years). A longer `duration_secs` is
/// refused with `invalid` and a message saying so (its end, in milliseconds since the epoch,
/// would not fit the store's signed 64-bit column); no duration means for good.
pub const MAX_MODERATION_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// Refused connections logged at `info` per minute (see `log_budget.rs`); past it they are
/// logged at `debug`, and the next `info` line says how many were held back. Failed handshakes
/// are at `debug` only: they prove no key, and anyone can make thousands.
pub const REFUSAL_LOG_LINES: u32 = 20;

/// Most rooms one user may be in at once (bounds what one connection can make the server hold).
pub const MAX_ROOMS_PER_USER: usize = 50;

/// Key packages kept per key. Overflow policy: uploading more replaces the oldest; a fetch
/// takes one, except the last, which is kept (and handed out again) as a last resort.
pub const MAX_KEY_PACKAGES: usize = 16;

/// Keys whose key packages are kept. Overflow policy: uploading for a new key forgets the
/// packages of the key that uploaded least recently among those offline (it uploads again on
/// its next connection); if every key held is online, the upload is refused with `busy`.
pub const MAX_KEY_PACKAGE_KEYS: usize = 10_000;

/// Largest key package accepted, decoded (MLS wire bytes). A package of Chatao's ciphersuite
/// with its credential (fingerprint, X25519 key and XEdDSA proof) is about 430 bytes (570 in
/// base64); a larger one is refused with `too_long` before it is parsed.
pub const MAX_KEY_PACKAGE_BYTES: usize = 2 * 1024;

/// Most key packages one `key_packages` upload may carry (the client sends 5 per connection);
/// more is refused with `invalid` before any is parsed.
pub const MAX_KEY_PACKAGES_PER_UPLOAD: usize = MAX_KEY_PACKAGES;

/// Key packages one session may have checked per [`KEY_PACKAGE_CHECK_WINDOW`]: each costs
/// three signature verifications, and a client uploads 5 per connection. Overflow policy: the
/// upload is refused with `rate_limited` before any is parsed (the welcomes waiting for the
/// key are still handed out).
pub const KEY_PACKAGE_CHECKS: u32 = 64;
/// See [`KEY_PACKAGE_CHECKS`].
pub const KEY_PACKAGE_CHECK_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Key packages the whole server checks per second, after a burst of
/// [`KEY_PACKAGE_CHECKS_BURST`] (400 clients reconnecting at once upload 2,000): many sessions
/// each within [`KEY_PACKAGE_CHECKS`] took 1.75 cores of two and the honest pair's p99 to
/// 141 ms (the adversarial run). Overflow policy: the upload is refused with `busy` before any
/// is parsed (nothing kept; the welcomes waiting for the key are still handed out; the
/// reference client uploads again at its next connection).
pub const KEY_PACKAGE_CHECKS_PER_SEC: u32 = 200;
/// See [`KEY_PACKAGE_CHECKS_PER_SEC`].
pub const KEY_PACKAGE_CHECKS_BURST: u32 = 2_000;

/// Base64 bytes of key packages kept per key (besides [`MAX_KEY_PACKAGES`]). Overflow policy:
/// the oldest are replaced, as for the count.
pub const MAX_KEY_PACKAGE_BYTES_PER_KEY: usize = 16 * 1024;

/// Base64 bytes of key packages kept for all keys together (in memory, and so in the store,
/// which mirrors it). Overflow policy: as for [`MAX_KEY_PACKAGE_KEYS`], the packages of the
/// offline keys that uploaded least recently are forgotten; if that is not enough, the upload
/// is refused with `busy`. With [`MAX_KEY_PACKAGE_KEYS`] this bounds the key-package table at
/// 32 MiB of packages plus bookkeeping of about 50 bytes per package (at most 58,000 valid
/// ones fit) and 300 per key: under 40 MiB in all, however many keys upload.
pub const MAX_KEY_PACKAGE_TOTAL_BYTES: usize = 32 * 1024 * 1024;

/// Key packages one session may fetch in a burst (enough to invite a room's worth of people at
/// once), and how often one more is allowed. Overflow policy: the fetch is refused with
/// `rate_limited`.
pub const KEY_PACKAGE_FETCH_BURST: u32 = 64;
/// See [`KEY_PACKAGE_FETCH_BURST`].
pub const KEY_PACKAGE_FETCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Key packages one session may fetch of the same nickname per [`KEY_PACKAGE_TARGET_WINDOW`]:
/// so that nobody can drain another key's packages (each is meant to be used once). Overflow
/// policy: the fetch is refused with `rate_limited`.
pub const KEY_PACKAGES_PER_TARGET: u32 = 4;
/// See [`KEY_PACKAGES_PER_TARGET`].
pub const KEY_PACKAGE_TARGET_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Nicknames one session's per-target counts remember per window. Overflow policy: further
/// fetches of other nicknames are refused with `rate_limited` until the window ends.
pub const KEY_PACKAGE_TARGETS_TRACKED: usize = 256;

/// Largest base64 MLS body (commit, welcome, application message or key package) accepted, in
/// bytes. Records are bounded by [`MAX_RECORD_BYTES`] anyway; this keeps a commit with its
/// welcome inside one record.
pub const MAX_SEALED_BYTES: usize = 14 * 1024;

/// Most keys a commit may add or remove at once.
pub const MAX_COMMIT_CHANGES: usize = 64;

/// Welcomes kept per key for rooms it was added to while offline. Overflow policy: the
/// oldest is forgotten (its inviter can add the key again).
pub const MAX_PENDING_WELCOMES: usize = 64;

/// Time a connection to the metrics endpoint has to send its whole request head, counted from
/// its acceptance (not from its last byte, so dribbling does not extend it). Past it the
/// connection is closed without an answer: a stalled or dribbling peer holds one slot of
/// [`METRICS_CONNECTIONS`] for this long at most.
pub const METRICS_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Time the metrics endpoint has to write its answer once the head is read; a peer that does
/// not take it is closed.
pub const METRICS_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head the metrics endpoint reads, in bytes. A head that has not ended by
/// then is answered `431 Request Header Fields Too Large` and closed.
pub const METRICS_MAX_HEAD_BYTES: usize = 4096;

/// Connections the metrics endpoint serves at once, each in its own task. Overflow policy: the
/// oldest connection still sending its head is closed to make room for the new one (an honest
/// scrape sends its head at once, so only dribblers lose their slots); if every connection is
/// already being answered, the new one is closed at once.
pub const METRICS_CONNECTIONS: usize = 64;

/// Pongs a connection is sent per second, steadily, in answer to its pings. Pings are not
/// charged to the command rate (a ping behind a fakelag backlog waits its turn, in order, but
/// never needs a token, and the client's own keepalive, one ping per 30 s of silence, is never
/// refused); a ping over this rate is not refused either: its answer is deferred, and when the
/// pong rate allows, one pong answers the latest ping received (the ones before it are
/// answered by it).
pub const PONGS_PER_SEC: u32 = 2;

/// Pongs sent at once before [`PONGS_PER_SEC`] applies.
pub const PONG_BURST: u32 = 10;

/// Client message ids ([`chatao_proto::Cid`]) remembered per key, with their echoes, so that a
/// message sent again is answered with its first echo (`hub/sent.rs`). Overflow policy: the
/// key's oldest id is forgotten. Clients keep at most
/// [`chatao_proto::MAX_UNACKED`] messages unacknowledged, fewer than this.
pub const SENT_IDS_PER_KEY: usize = 512;
/// Client message ids remembered in all. Overflow policy: the oldest of any key is forgotten.
/// At most this many echoes are held (each up to about 4 KiB with a full-length message).
pub const SENT_IDS_TOTAL: usize = 65_536;
/// How long a client message id is remembered: longer than a client keeps trying to reconnect
/// before it gives up and reports its unsent messages.
pub const SENT_IDS_WINDOW: Duration = Duration::from_secs(600);

/// Nicknames one key may hold registered at once (`hub/names.rs`): the ones its sessions use
/// or last used, and the ones it renamed away from within [`NICK_GRACE`]. Taking one more
/// first releases, at once, the key's oldest name renamed away from; a key whose names are
/// all current is refused with the limit and its names. One key on eight connections took 576
/// names in 10.8 s before this limit.
pub const MAX_NICKS_PER_KEY: usize = 4;

/// Sessions that may hold one nickname at once on a standalone server (`hub/nicknames.rs`):
/// one person on several devices (a laptop, a phone-sized terminal, a bot), each receiving
/// the rooms it is in and every private message. Overflow policy: the next `hello` with that
/// nickname is refused (`bye` `nick_in_use`, saying why); the sessions online go on. A cluster
/// node keeps one session per nickname (its `chatao_online` bucket names one holder), and a
/// new connection there replaces the old one (PROTOCOL 9.2).
pub const MAX_SESSIONS_PER_NICK: usize = 8;

/// Keys one person may have (`hub/devices.rs`): their first key and the devices' keys linked
/// to it with `device_add`. Overflow policy: the next `device_add` is refused, saying so.
pub const MAX_KEYS_PER_PERSON: usize = 8;

/// Longest name of a device given with `device_add`, in bytes (refused past it).
pub const MAX_DEVICE_NAME_BYTES: usize = 64;

/// How long a nickname renamed away from stays reserved for its key before another key may
/// take it (the owner may take it back meanwhile).
pub const NICK_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Least time between two nickname changes of one key (all its sessions together), beyond the
/// general rate: a change is announced to every room the sender is in.
pub const NICK_CHANGE_INTERVAL: Duration = Duration::from_secs(10);

/// Keys whose last nickname change is remembered before the ones older than
/// [`NICK_CHANGE_INTERVAL`] (which no longer matter) are forgotten. Overflow policy: those
/// are forgotten; the map holds only keys that changed nickname in the last interval.
pub const NICK_CHANGES_REMEMBERED: usize = 4096;

/// Rooms in one `room_list` page (issue 15 item 12). A client asks for the next page with
/// `list { after }`, the name of the page's last room (`next`); the page is built from the
/// rooms in memory in name order under the hub lock (at most this many copied), and encoded
/// after the lock is released.
pub const LIST_PAGE: usize = 100;

/// Members in one `members` page answering `who` (issue 15 item 17), in nickname order; the
/// next page is asked for with `who { room, after }`.
pub const WHO_PAGE: usize = 200;

/// A room with this many members or more is a large room (issue 15 item 17): a join is not
/// announced to the room until the newcomer first speaks (then a `join` precedes their first
/// message), a part or quit is announced only of a member the room was told about (announced,
/// listed to a joiner, or a speaker), and a joiner receives only the recently active members
/// and the total instead of the whole list (the rest by `who` pages). Smaller rooms announce
/// every join and part and list every member, as before.
pub const LARGE_ROOM: usize = 100;

/// Recent speakers a large room remembers (the most recent last) for the member list sent to
/// a joiner. Overflow policy: the least recent is forgotten (it stays a member).
pub const RECENT_SPEAKERS: usize = 100;

/// How recently a member must have spoken to be listed to a joiner of a large room.
pub const RECENT_SPEAKER_WINDOW: Duration = Duration::from_secs(600);

/// Members per chunk of a room's member list, which is shared (copied on write) with the
/// deliveries in flight: a join or part while a delivery holds a snapshot copies one chunk
/// and the chunk pointers, never the whole list.
pub const MEMBER_CHUNK: usize = 256;
