#!/usr/bin/env python3
"""A bridge bot: relays one Chatao room into a log file, each message exactly once, in order,
across restarts and crashes (of the bot or of chatao).

It has no protocol code of its own: it runs `chatao --json --quiet --state STATE` over a pipe
and reads one JSON event per line (README, "Writing a bot"). Python 3, standard library only.

    bridge_bot.py --log room.log --state bot.state [--room '#ops'] [--chatao PATH] -- SERVERS NICK [chatao options]

The log holds one JSON object per message: {"id": ..., "time": ..., "from": ..., "text": ...}.

How "exactly once" holds: chatao writes in STATE, after printing each message, the id of the
last one it printed, and started again asks the server for exactly what came after. But a
bridge that is killed may not have written the last messages chatao printed into its pipe; so
the log is the bridge's own checkpoint: each line is flushed and fsynced before the next is
read, and on start the bot puts the id of the log's last message into STATE (atomically)
before it starts chatao. chatao then prints everything after it, once, in order.

Exit status: chatao's (0 when its input ended and everything was delivered, 1 on a failure,
2 for a state file or arguments it cannot use). Under systemd, Restart=on-failure with
RestartPreventExitStatus=2.
"""

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile


def last_logged(log_path):
    """The id of the log's last message (0 if none). A last line cut by a crash (no newline)
    is removed: that message was not relayed, chatao prints it again."""
    if not os.path.exists(log_path):
        return 0
    with open(log_path, "rb+") as log:
        data = log.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.truncate(end)
            log.flush()
            os.fsync(log.fileno())
        lines = data[:end].splitlines()
    return json.loads(lines[-1])["id"] if lines else 0


def write_atomically(path, data):
    """Replaces `path` with `data`: a temporary file in the same directory, fsync, rename,
    fsync of the directory (the same way chatao writes its state)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bridge-state", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def rewind_state(state_path, room, last_id):
    """Puts the log's last id as `room`'s place in chatao's state file, for every server it
    names (the file is JSON: {"version":1,"servers":{KEY:{ROOM:ID}}}). No file yet: chatao
    makes it. An empty log: the room's place is removed, so chatao starts from the room's
    join replay again (what it printed before was never relayed)."""
    if not os.path.exists(state_path):
        return
    with open(state_path, "rb") as f:
        state = json.load(f)
    for rooms in state.get("servers", {}).values():
        if last_id:
            rooms[room] = last_id
        else:
            rooms.pop(room, None)
    write_atomically(state_path, json.dumps(state).encode())


def die_with_parent():
    """chatao ends when the bot does (Linux): it must not print, or move the state file on,
    for a bot that is gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", required=True, help="the file the room is relayed into")
    parser.add_argument("--state", required=True, help="chatao's state file")
    parser.add_argument("--room", default="#lobby", help="the room to relay (default #lobby)")
    parser.add_argument("--chatao", default="chatao", help="the chatao binary")
    parser.add_argument("chatao_args", nargs="+", help="SERVERS NICK [chatao options]")
    args = parser.parse_args()
    room = args.room.lower()
    if not room.startswith("#"):
        room = "#" + room

    last = last_logged(args.log)
    rewind_state(args.state, room, last)
    command = [args.chatao, "--json", "--quiet", "--state", args.state] + args.chatao_args
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=die_with_parent
    )
    if room != "#lobby":
        child.stdin.write(("/join %s\n" % room).encode())
        child.stdin.flush()
    # chatao's standard input stays open: the bot only listens. (Closing it would make chatao
    # quit once everything it sent is delivered.)
    with open(args.log, "ab") as log:
        for line in child.stdout:
            event = json.loads(line)
            kind = event.get("type")
            if kind == "ready":
                print("bridge: caught up, live", file=sys.stderr, flush=True)
            if kind != "message" or event.get("room") != room:
                continue
            if event["id"] <= last:
                # Already in the log (only when chatao had no place for the room yet).
                continue
            entry = {k: event[k] for k in ("id", "time", "from", "text")}
            log.write((json.dumps(entry) + "\n").encode())
            log.flush()
            os.fsync(log.fileno())
            last = event["id"]
    code = child.wait()
    sys.exit(code if code >= 0 else 1)


if __name__ == "__main__":
    main()
