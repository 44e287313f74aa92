#!/usr/bin/env python3
"""A small Chatao client, written from docs/PROTOCOL.md alone (section numbers refer to it).

    python3 chatao_client.py HOST PORT NICK [--room ROOM] [--server-key FINGERPRINT] [--key FILE]

It connects, checks the server's key when --server-key is given (otherwise it trusts any key
and says so), says hello, joins ROOM (default #lobby), and sends each line of standard input to
ROOM as a message; a line starting with '{' is sent as it is, as a raw JSON message. Every record
from the server is printed on standard output as one JSON line, ASCII-escaped so that nothing in
it can act on a terminal. At the end of standard input it sends quit, waits for the server's
bye, and exits.

Exit status: 0 after a clean quit; 1 when the connection was lost or the server ended it;
2 when the server refused us, or its key was not the expected one.

Needs Python 3.8+ and noiseprotocol 0.3.1 (tested with cryptography 48.0.0):
    pip install -r docs/examples/requirements.txt
"""

import argparse
import base64
import collections
import hashlib
import json
import os
import queue
import socket
import struct
import sys
import threading
import time

from noise.connection import Keypair, NoiseConnection

NOISE_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2s"  # 3.1
PREAMBLE = b"CHATAO\x00\x01"  # magic + version 1 (2)
TAG = 16  # Poly1305 tag in every frame (4.1)
MAX_CLIENT_RECORD = 16 * 1024  # the server's limit, newline included (4.3)
MAX_SERVER_RECORD = 1 << 20  # what we are willing to buffer (4.3)
PKCS8_PREFIX = bytes.fromhex("302e020100300506032b656e04220420")  # X25519 key file (3.4)
PING_AFTER, DEAD_AFTER = 30.0, 75.0  # keepalive (7.3)
PACED = {"say", "me", "msg"}  # charged against the rate (7.1)


class Lost(Exception):
    """The connection ended without a bye, or broke."""


class Refused(Exception):
    """We will not talk to this server, or it will not talk to us."""


def fingerprint(public_key):
    """SHA256: + unpadded standard base64 of SHA-256 of the raw 32-byte key (3.4)."""
    digest = hashlib.sha256(public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def normalize_fingerprint(text):
    text = text.strip()
    return "SHA256:" + text[7:].rstrip("=") if text[:7].lower() == "sha256:" else text


def load_or_create_key(path):
    """The 32-byte static secret: from a PKCS#8 PEM file, created (mode 0600) if absent."""
    if path is None:
        return os.urandom(32)  # a new identity each run
    if os.path.exists(path):
        with open(path) as f:
            body = "".join(l.strip() for l in f if l.strip() and not l.startswith("-----"))
        der = base64.b64decode(body)
        if len(der) != 48 or not der.startswith(PKCS8_PREFIX):
            raise SystemExit(f"{path}: not an unencrypted X25519 PKCS#8 key")
        return der[16:]
    secret = os.urandom(32)
    pem = base64.b64encode(PKCS8_PREFIX + secret).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"-----BEGIN PRIVATE KEY-----\n{pem}\n-----END PRIVATE KEY-----\n")
    return secret


class Connection:
    """Preamble, Noise XX as initiator, then frames carrying newline-terminated JSON records."""

    def __init__(self, host, port, secret, expected):
        self.sock = socket.create_connection((host, port), timeout=15)
        self.raw, self.plain, self.eof = bytearray(), bytearray(), False
        self.sock.sendall(PREAMBLE)  # 2: the client speaks first
        theirs = self._read_exact(8)
        if theirs[:6] != PREAMBLE[:6]:
            raise Refused("not a Chatao server")
        if theirs != PREAMBLE:
            raise Refused(f"the server speaks version {int.from_bytes(theirs[6:], 'big')}, we speak 1")
        self.noise = NoiseConnection.from_name(NOISE_NAME)
        self.noise.set_as_initiator()
        self.noise.set_keypair_from_private_bytes(Keypair.STATIC, secret)
        self.noise.set_prologue(PREAMBLE + theirs)  # client preamble || server preamble
        self.noise.start_handshake()
        self._write_frame(self.noise.write_message())  # message 1: e
        if self.noise.read_message(self._read_frame()):  # message 2: e, ee, s, es
            raise Refused("non-empty handshake payload: not a Chatao server")
        # 3.2 / 12: check the server's key *before* message 3 reveals ours.
        self.server_fp = fingerprint(self.noise.noise_protocol.handshake_state.rs.public_bytes)
        if expected and normalize_fingerprint(expected) != self.server_fp:
            self.sock.close()  # send nothing more
            raise Refused(f"the server presented {self.server_fp}, expected {expected}")
        self._write_frame(self.noise.write_message())  # message 3: s, se
        assert self.noise.handshake_finished

    def _read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise Lost("the server closed the connection during the handshake")
            data += chunk
        return data

    def _read_frame(self):
        return self._read_exact(struct.unpack(">H", self._read_exact(2))[0])

    def _write_frame(self, message):
        self.sock.settimeout(10)
        self.sock.sendall(struct.pack(">H", len(message)) + bytes(message))

    def send(self, msg):
        """One record (compact JSON + newline) in one frame."""
        record = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        if len(record) > MAX_CLIENT_RECORD:
            raise ValueError("record over the server's 16 KiB limit")
        self._write_frame(self.noise.encrypt(record))

    def poll(self, timeout):
        """The records that arrive within `timeout` seconds (often none). Sets `eof` at the end."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return []
        except ConnectionResetError:  # may follow a bye (9.3)
            data = b""
        if not data:
            self.eof = True
            return []
        self.raw += data
        while len(self.raw) >= 2:  # 4.1: u16 length + Noise message
            n = struct.unpack(">H", self.raw[:2])[0]
            if len(self.raw) < 2 + n:
                break
            if n < TAG:
                raise Lost("malformed frame")
            try:
                self.plain += self.noise.decrypt(bytes(self.raw[2 : 2 + n]))
            except Exception as e:  # 3.3: any failed frame ends the connection
                raise Lost(f"a frame failed to decrypt: {e}")
            del self.raw[: 2 + n]
        records = []
        while (end := self.plain.find(b"\n")) >= 0:  # 4.2: records end with \n
            line = bytes(self.plain[:end])
            del self.plain[: end + 1]
            msg = json.loads(line)
            if isinstance(msg, dict):
                records.append(msg)
        if len(self.plain) > MAX_SERVER_RECORD:
            raise Lost("record too large")
        return records


class Pacer:
    """The token bucket of 7.1, with a margin: 90 % of the rate, one token of the burst kept."""

    def __init__(self, limits):
        self.rate = 0.9 * limits.get("rate_per_sec", 0)
        self.capacity = max(limits.get("burst", 1) - 1, 1)
        self.tokens, self.last = float(self.capacity), time.monotonic()

    def take(self):
        if self.rate == 0:  # rate_per_sec 0: unlimited
            return True
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def read_stdin(lines):
    for raw in sys.stdin.buffer:
        lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
    lines.put(None)  # end of input


def to_message(line, room):
    if not line.startswith("{"):
        return {"type": "say", "room": room, "text": line}
    try:
        return json.loads(line)  # a raw client message, e.g. {"type":"list"}
    except ValueError:
        print(f"not JSON, not sent: {line}", file=sys.stderr)
        return None


def run(args):
    conn = Connection(args.host, args.port, load_or_create_key(args.key), args.server_key)
    checked = "verified" if args.server_key else "NOT verified: pass --server-key to check it"
    print(f"connected; server key {conn.server_fp} ({checked})", file=sys.stderr)
    conn.send({"type": "hello", "nick": args.nick})
    lines = queue.Queue()
    outbox = collections.deque()
    pacer, stdin_done, quit_at = None, False, None
    started = last_heard = time.monotonic()
    pinged = False
    while not conn.eof:
        for msg in conn.poll(0.2):
            last_heard, pinged = time.monotonic(), False
            print(json.dumps(msg, ensure_ascii=True, separators=(",", ":")), flush=True)
            kind = msg.get("type")
            if kind == "ping":  # 7.3: answer every ping with its token
                conn.send({"type": "pong", "token": msg.get("token", 0)})
            elif kind == "welcome":
                pacer = Pacer(msg.get("limits", {}))
                conn.send({"type": "join", "room": args.room})
                threading.Thread(target=read_stdin, args=(lines,), daemon=True).start()
            elif kind == "bye":  # the server's last message (10)
                deadline = time.monotonic() + 2
                while not conn.eof and time.monotonic() < deadline:
                    conn.poll(0.2)  # read to EOF so that we do not reset the connection
                if quit_at and msg.get("code") is None:
                    return 0
                print(f"bye ({msg.get('code')}): {msg.get('reason')}", file=sys.stderr)
                return 1 if pacer else 2  # refused before welcome: 2
        now = time.monotonic()
        if pacer is None and now - started > 15:
            raise Lost("no welcome within 15 s")
        if quit_at and now - quit_at > 10:
            raise Lost("no bye within 10 s of quit")
        while pacer and not stdin_done:
            try:
                line = lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                stdin_done = True
            elif line.strip() and (out := to_message(line, args.room)):
                outbox.append(out)
        while outbox and (outbox[0].get("type") not in PACED or pacer.take()):
            conn.send(outbox.popleft())
        if stdin_done and not outbox and not quit_at:
            conn.send({"type": "quit"})
            quit_at = now
        silence = now - last_heard
        if silence > PING_AFTER + DEAD_AFTER:
            raise Lost("the server stopped answering")
        if silence > PING_AFTER and not pinged:
            conn.send({"type": "ping", "token": int(time.time())})
            pinged = True
    raise Lost("the server closed the connection without a bye")


def main():
    parser = argparse.ArgumentParser(description="A small Chatao client (see docs/PROTOCOL.md).")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("nick")
    parser.add_argument("--room", default="#lobby", help="room to join and talk in (default #lobby)")
    parser.add_argument("--server-key", help="the server key's fingerprint (SHA256:...)")
    parser.add_argument("--key", help="PKCS#8 PEM key file, created if absent (default: a new key)")
    args = parser.parse_args()
    try:
        return run(args)
    except Refused as e:
        print(f"refused: {e}", file=sys.stderr)
        return 2
    except (Lost, OSError, ValueError) as e:
        print(f"connection lost: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
