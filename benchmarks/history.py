"""The history scenario: one room holding a million messages. How long a page
of 100 takes to fetch, and how fast a member who missed 10,000 catches up
(SYNC, then HISTORY pages as the client does). The relay stores nothing, so
the daemon is held to a target instead of a ratio.

Sending a million messages through the daemon would take many minutes, so
the room is made once and cached: a real daemon registers the owner, creates
the room and takes the first key rotation through the protocol; once it has
stopped, the other epochs (one per 100 messages, as the daemon enforces, each
an entry of the room's log, signed and chained) and the messages are written
straight into its SQLite database, exactly as the daemon itself would have
stored them. Each run works on a fresh copy of that data dir.
"""

import os
import random
import sqlite3
import time
from dataclasses import dataclass, field

from twisted.internet import defer

from benchmarks import identities
from benchmarks.loadgen import DaemonClient, Histogram, Peers, Room, serve
from benchmarks.processes import (
    Workers,
    build_data_dir,
    cache_path,
    copy_data_dir,
    source_address,
    start_server,
)
from benchmarks.report import median, ms
from securechat.constants import ROTATE_AFTER_MESSAGES
from securechat.roomlog import SignedEntry, author, replay
from securechat.server.backends import DATABASE_FILE
from securechat.wire import b64encode

OWNER = "owner"
ROOM = "#history"
PAGE = 100
TARGET = 0.020
TOKEN_BYTES = 300
SIGNATURE_BYTES = 384
CHUNK = 50_000


@dataclass(frozen=True)
class Spec:
    messages: int
    missed: int
    requests: int


def ensure(spec: Spec) -> str:
    """The cached data dir for C{spec}, built first if there is none."""
    path = cache_path(f"history-{spec.messages}")
    if os.path.isdir(path):
        return path
    started = time.monotonic()
    print(f"history: building a room of {spec.messages:,} messages in {path} (once; cached)",
          flush=True)
    identities.ensure(1)
    owner = identities.load([0])[0]

    def prepare(server):
        Workers("benchmarks.history", [_plan(server, build=True)]).stop()

    def finish(data_dir):
        _fill(os.path.join(data_dir, DATABASE_FILE), owner, spec.messages)

    build_data_dir(path, prepare, finish)
    print(f"history: built in {time.monotonic() - started:.0f} s", flush=True)
    return path


def _fill(path: str, owner, messages: int) -> None:
    """Epochs 2 onwards (entries of the room's log, chained after what the
    daemon stored) and every message, in one transaction; durability is
    relaxed only here, for a throwaway cache (the daemon sets its own)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")
    (owner_id,) = db.execute("SELECT id FROM users WHERE folded = ?", (OWNER,)).fetchone()
    (room,) = db.execute("SELECT id FROM rooms WHERE folded = ?", (ROOM,)).fetchone()
    state = replay(SignedEntry.decode(bytes(data), bytes(signature)) for data, signature in
                   db.execute("SELECT entry, signature FROM room_log WHERE room_id = ?"
                              " ORDER BY idx", (room,)))
    epochs = -(-messages // ROTATE_AFTER_MESSAGES)
    print(f"history: signing {epochs - state.epoch:,} epoch entries", flush=True)
    now, entries = time.time(), []
    while state.epoch < epochs:
        _, signed, wraps = author.epoch(owner, state, [owner.public], "benchmark", int(now))
        entries.append((signed, wraps[owner.fingerprint]))
        state.apply(signed, verify=False)
    print(f"history: writing {messages:,} messages", flush=True)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO room_log (room_id, idx, entry, signature, created) VALUES (?, ?, ?, ?, ?)",
        ((room, signed.entry.index, signed.data, signed.signature, now)
         for signed, _ in entries))
    db.executemany(
        "INSERT INTO epochs (room_id, epoch, rotator_id, record, signature, created)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        ((room, signed.entry.body["epoch"], owner_id, signed.data, signed.signature, now)
         for signed, _ in entries))
    db.executemany(
        "INSERT INTO wraps (room_id, epoch, user_id, wrapper_id, wrap) VALUES (?, ?, ?, ?, ?)",
        ((room, signed.entry.body["epoch"], owner_id, owner_id, wrap)
         for signed, wrap in entries))
    # The owner sent them all, a hundred per epoch, one every 10 ms until now;
    # message id, token and signature are random bytes of the real sizes.
    token, signature, row = 16, 16 + TOKEN_BYTES, 16 + TOKEN_BYTES + SIGNATURE_BYTES
    for start in range(1, messages + 1, CHUNK):
        count = min(CHUNK, messages + 1 - start)
        noise = os.urandom(count * row)
        rows = []
        for n in range(count):
            seq, at = start + n, n * row
            rows.append((room, seq, owner_id, (seq - 1) // ROTATE_AFTER_MESSAGES + 1, seq,
                         noise[at:at + token], noise[at + token:at + signature],
                         noise[at + signature:at + row], now - (messages - seq) * 0.01))
        db.executemany(
            "INSERT INTO messages (room_id, server_seq, sender_id, epoch, seq, message_id,"
            " token, signature, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("COMMIT")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()


def _plan(server, build: bool = False, spec: Spec | None = None) -> dict:
    return {"server": "daemon", "host": "127.0.0.1", "port": server.port,
            "fingerprint": server.fingerprint, "build": build,
            "messages": spec and spec.messages, "missed": spec and spec.missed,
            "requests": spec and spec.requests}


class HistoryWorker(Peers):
    """The room's owner. To build: registers, creates the room and rotates to the
    first epoch. To measure: logs in, fetches pages, then catches up."""

    @defer.inlineCallbacks
    def setup(self):
        plan = self.plan
        owner = identities.load([0])[0]
        room = Room(ROOM)
        self.client = DaemonClient(self, OWNER, owner, room, source_address(0),
                                   login=not plan["build"])
        room.members.append(self.client)
        yield self.client.connect()
        if plan["build"]:
            _, signed, wraps = author.epoch(owner, room.state, [owner.public], "benchmark",
                                            int(time.time()))
            yield self.client.request("ROTATE", ROOM, str(signed.entry.index),
                                      b64encode(signed.data), b64encode(signed.signature),
                                      b64encode(wraps[owner.fingerprint]))

    @defer.inlineCallbacks
    def run(self):
        plan, last = self.plan, self.plan["messages"]
        rng = random.Random(last)
        pages = Histogram()
        for _ in range(plan["requests"]):
            before = rng.randint(PAGE + 1, last + 1)
            started = time.perf_counter()
            reply = yield self.client.request("HISTORY", ROOM, "before", str(before), str(PAGE))
            pages.add(time.perf_counter() - started)
            if _seqs(reply.lines) != list(range(before - PAGE, before)):
                self.count("wrong page")
        # Catching up as the client does: SYNC from our position, then, if it
        # says MORE, HISTORY after the newest seen until a page comes back empty.
        position = last - plan["missed"]
        started = time.perf_counter()
        reply = yield self.client.request("SYNC", f"{ROOM}={position}")
        seen = _seqs(reply.lines)
        more = [line for line in reply.lines if line.startswith(b"MORE ")]
        while more:
            reply = yield self.client.request("HISTORY", ROOM, "after", str(seen[-1]), "500")
            more = _seqs(reply.lines)
            seen += more
        seconds = time.perf_counter() - started
        if seen != list(range(position + 1, last + 1)):
            self.count("catch-up missed or repeated messages")
        return {"pages": pages.counts, "caught_up": len(seen), "seconds": seconds,
                "errors": self.errors}


def _seqs(lines: list[bytes]) -> list[int]:
    """The server seqs of a reply's MESSAGE lines."""
    return [int(line.split(b" ", 4)[3]) for line in lines if line.startswith(b"MESSAGE ")]


@dataclass
class Outcome:
    start_seconds: float = 0.0
    pages: Histogram = field(default_factory=Histogram)
    caught_up: int = 0
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.caught_up / self.seconds if self.seconds else 0.0


def run_once(spec: Spec) -> Outcome:
    server = start_server("daemon", copy_data_dir(ensure(spec)))
    pool = None
    try:
        pool = Workers("benchmarks.history", [_plan(server, spec=spec)])
        figures = pool.command("go")[0]["go"]
        return Outcome(server.started_in, Histogram(figures["pages"]), figures["caught_up"],
                       figures["seconds"], figures["errors"])
    finally:
        if pool is not None:
            pool.stop()
        server.stop()


def median_outcome(outcomes: list[Outcome]) -> Outcome:
    return median(outcomes, lambda o: o.pages.percentile(0.5))


def rows(spec: Spec, ours: Outcome) -> list[tuple]:
    """(metric, relay, daemon, target) rows: the relay keeps no history."""
    table = [(f"daemon start with {spec.messages:,} messages", "n/a",
              f"{ours.start_seconds:.1f} s", "")]
    for name, fraction in (("p50", 0.5), ("p99", 0.99)):
        seconds = ours.pages.percentile(fraction)
        verdict = "met" if seconds is not None and seconds < TARGET else "missed"
        table.append((f"page of {PAGE} (HISTORY before, {spec.requests} random places), {name}",
                      "n/a", ms(seconds), f"target < {TARGET * 1000:.0f} ms: {verdict}"))
    table.append((f"catch-up after {spec.missed:,} missed (SYNC, HISTORY after)", "n/a",
                  f"{ours.rate:,.0f} msg/s", ""))
    table.append(("caught up / missed", "n/a", f"{ours.caught_up:,} / {spec.missed:,}", ""))
    table.append(("errors", "n/a", str(ours.errors), ""))
    return table


if __name__ == "__main__":
    serve(HistoryWorker)
