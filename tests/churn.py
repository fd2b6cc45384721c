"""The seeded churn simulation: a busy team on an honest server.

Ten users and four rooms go through a schedule drawn from a seed: joins,
invites, parts, kicks, bans and unbans, ops, history-policy and invite-only
switches, /rotate, messages, offline periods, client restarts, and a
graceful stop (SIGTERM) and a crash (SIGKILL) of the daemon. Each step runs
to completion on the in-process network (tests.clientharness), the daemon
on an SQLite file so that it can be restarted. At the end everyone comes
back online and the network settles; then every (member, message) pair is
judged against the room's log on the server:

- unreadable: a member entitled to a message never saw it. Entitled are the
  members of the room when it was stored who still are (in that same
  membership), and, in a room sharing its history, members who joined later
  while it still shared it since before the message;
- leaked: someone saw a message they were never entitled to;
- lost: a message the user sent that never got acknowledged, or an
  acknowledged one the server does not have;
- duplicated: a message shown twice to one member, or stored twice;
- false alarms: a warning only a lying server should cause (a fork, a
  failed verification, a withheld key or log, a changed key).

All but duplicates must be zero. Run one seed with
``python -m tests.churn --seed 7 --ops 300`` (``make churn SEED=7 OPS=300``);
a short version runs in ``make test`` (tests.test_churn).
"""

import argparse
import random
import sys
from dataclasses import dataclass, field

from twisted.internet import task

from securechat.names import fold
from tests.clientharness import Network, binding
from tests.serverharness import Server

USERS = ("ana", "ben", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "jon")
ROOMS = ("#general", "#dev", "#ops", "#random")

# Events an honest server never causes: each is counted as a false alarm.
ALARMS = ("room_forked", "verification_failed", "warning", "key_stalled", "identity_changed",
          "identity_alias")

# How long the end of a run lets pass for keys, requests and rotations (s).
FINAL_SETTLE_SECONDS = 600

# What each step may be, and how often, relative to one another.
WEIGHTS = {
    "send": 40, "join": 12, "part": 4, "invite": 4, "kick": 3, "ban": 2, "unban": 2,
    "op": 2, "rotate": 3, "history": 2, "invite_only": 1, "offline": 6, "online": 8,
    "restart": 3,
}


@dataclass
class Sent:
    """One message the simulation had a user send."""

    room: str
    sender: str
    text: str
    # Set once acknowledged: the server's seq, and who may read it.
    server_seq: int | None = None
    members: frozenset = frozenset()
    log_length: int = 0
    boundary: int | None = None


@dataclass
class Verdict:
    seed: int
    ops: int
    messages: int = 0
    pairs: int = 0
    unreadable: list = field(default_factory=list)
    leaked: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    alarms: list = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.unreadable or self.leaked or self.lost or self.alarms)

    def summary(self) -> str:
        return (f"churn seed {self.seed}, {self.ops} steps: {self.messages} messages, "
                f"{self.pairs} (member, message) pairs judged; "
                f"unreadable-but-entitled {len(self.unreadable)}, leaked {len(self.leaked)}, "
                f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
                f"false alarms {len(self.alarms)}")


class Churn:
    def __init__(self, seed: int, ops: int, path: str):
        self.seed, self.ops, self.path = seed, ops, path
        self.rng = random.Random(seed)
        self.clock = task.Clock()
        self.net = Network(clock=self.clock, path=path)
        self.rigs = {}
        self.shown: dict[str, list] = {name: [] for name in USERS}
        self.sent: list[Sent] = []
        self.pending: dict[str, Sent] = {}
        self.failures: list = []
        # What an honest server must never make a client say.
        self.alarms: list = []
        self.snapshots: dict[str, list] = {}
        restarts = sorted(self.rng.sample(range(ops // 4, ops), 2))
        self.daemon_restarts = dict(zip(restarts, self.rng.sample(["term", "kill"], 2)))
        for name in USERS:
            self.rigs[name] = self._client(name)

    # -- the people -------------------------------------------------------------------

    def _client(self, name, state=None):
        rig = self.net.client(name, state)
        rig.session.subscribe(lambda event, name=name: self._heard(name, event))
        return rig

    def _heard(self, name, event) -> None:
        if event.kind == "message":
            self.shown[name].append((fold(event.fields["room"]), event.fields["server_seq"]))
        elif event.kind == "sent":
            # The sender's own copy: shown as sent.
            self.shown[name].append((fold(event.fields["room"]), event.fields["server_seq"]))
            sent = self.pending.pop(event.fields["id"], None)
            if sent is not None:
                self._acknowledged(sent, event.fields["server_seq"])
        elif event.kind == "error" and event.fields.get("id") in self.pending:
            self.failures.append((name, event.fields))
        if event.kind in ALARMS:
            self.alarms.append((name, event.kind, event.fields.get("message", "")))

    def _acknowledged(self, sent: Sent, server_seq: int) -> None:
        """Who may read it: the members by the log as the server stored it."""
        state = self.net.server.service.rooms.find(sent.room).state
        sent.server_seq = server_seq
        sent.members = frozenset(m.nick for m in state.members.values())
        sent.log_length = state.length
        sent.boundary = state.boundary if state.history == "shared" else None

    def online(self):
        return [n for n, rig in self.rigs.items() if rig.pump is not None]

    def state(self, room):
        found = self.net.server.service.rooms.find(room)
        return found.state if found is not None else None

    def members(self, room):
        state = self.state(room)
        return {m.nick: m.role for m in state.members.values()} if state else {}

    # -- steps ----------------------------------------------------------------------------

    def run(self) -> Verdict:
        for step in range(self.ops):
            if step in self.daemon_restarts:
                self.restart_daemon(self.daemon_restarts[step])
            kind = self.rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
            getattr(self, "step_" + kind)()
            self.settle()
            self.snapshot()
        return self.finish()

    def settle(self, seconds: float = 2.0) -> None:
        self.net.settle()
        self.clock.advance(seconds)
        self.net.settle()

    def pick(self, names):
        names = sorted(names)
        return self.rng.choice(names) if names else None

    def acting(self, room, roles=("owner", "op", "member")):
        """An online member of C{room} with one of C{roles}, if any."""
        members = self.members(room)
        return self.pick(n for n in self.online() if members.get(n) in roles)

    def step_send(self):
        room = self.rng.choice(ROOMS)
        sender = self.acting(room)
        if sender is None:
            return
        sent = Sent(fold(room), sender, f"{sender} #{len(self.sent)} in {room}")
        entry = self.rigs[sender].session.send_text(room, sent.text)
        self.sent.append(sent)
        self.pending[entry.message_id.hex()] = sent

    def step_join(self):
        room = self.rng.choice(ROOMS)
        state = self.state(room)
        candidates = [n for n in self.online() if n not in self.members(room)]
        if state is not None:
            banned = {state.names.get(fp) for fp in state.banned}
            invited = {i.nick for i in state.invites.values()}
            candidates = [n for n in candidates if n not in banned
                          and (not state.invite_only or n in invited)]
        user = self.pick(candidates)
        if user is not None:
            self.rigs[user].session.join(room)

    def step_part(self):
        room = self.rng.choice(ROOMS)
        user = self.acting(room)
        if user is not None:
            self.rigs[user].session.part(room)

    def step_invite(self):
        room = self.rng.choice(ROOMS)
        op = self.acting(room, ("owner", "op"))
        state = self.state(room)
        if op is None:
            return
        banned = {state.names.get(fp) for fp in state.banned}
        invitee = self.pick(set(USERS) - set(self.members(room)) - banned)
        if invitee is not None:
            self.rigs[op].session.invite(room, invitee)

    def _removal(self, ban: bool):
        room = self.rng.choice(ROOMS)
        op = self.acting(room, ("owner", "op"))
        if op is None:
            return
        members = self.members(room)
        rank = {"member": 0, "op": 1, "owner": 2}
        target = self.pick(n for n, r in members.items() if rank[r] < rank[members[op]])
        if target is not None:
            self.rigs[op].session.kick(room, target, "churn", ban=ban)

    def step_kick(self):
        self._removal(ban=False)

    def step_ban(self):
        self._removal(ban=True)

    def step_unban(self):
        room = self.rng.choice(ROOMS)
        op = self.acting(room, ("owner", "op"))
        state = self.state(room)
        if op is None or not state.banned:
            return
        target = self.pick(state.names[fp] for fp in state.banned)
        self.rigs[op].session.unban(room, target)

    def step_op(self):
        room = self.rng.choice(ROOMS)
        owner = self.acting(room, ("owner",))
        target = self.pick(n for n, r in self.members(room).items() if r == "member")
        if owner is not None and target is not None:
            self.rigs[owner].session.set_role(room, target, "op")

    def step_rotate(self):
        room = self.rng.choice(ROOMS)
        user = self.acting(room)
        if user is not None:
            self.rigs[user].session.rotate(room, "churn").addErrback(lambda f: None)

    def step_history(self):
        room = self.rng.choice(ROOMS)
        owner = self.acting(room, ("owner",))
        if owner is not None:
            policy = self.rng.choice(["joined", "shared"])
            self.rigs[owner].session.rotate(room, "churn", history=policy).addErrback(
                lambda f: None)

    def step_invite_only(self):
        room = self.rng.choice(ROOMS)
        owner = self.acting(room, ("owner",))
        if owner is not None:
            self.rigs[owner].session.configure(room, "invite_only",
                                               self.rng.choice(["on", "off"]))

    def step_offline(self):
        user = self.pick(self.online())
        if user is not None and len(self.online()) > 2:
            self.net.disconnect(self.rigs[user])

    def step_online(self):
        user = self.pick(set(USERS) - set(self.online()))
        if user is not None:
            self.net.connect(self.rigs[user])

    def step_restart(self):
        user = self.pick(self.online())
        if user is not None:
            rig = self.rigs[user]
            self.net.disconnect(rig)
            self.clock.advance(0)
            self.rigs[user] = self._client(user, rig.saved)

    def restart_daemon(self, how: str) -> None:
        """SIGTERM: the service stops cleanly; SIGKILL: it is dropped where it
        stands. Either way the clients that were online reconnect."""
        online = self.online()
        for name in online:
            self.net.disconnect(self.rigs[name])
        if how == "term":
            self.net.server.service.stopService()
        self.net.server = Server(self.clock, path=self.path)
        self.net.server.factory.channel_binding = binding
        for name in online:
            self.net.connect(self.rigs[name])

    # -- the verdict ------------------------------------------------------------------------

    def finish(self) -> Verdict:
        for name in USERS:
            if self.rigs[name].pump is None:
                self.net.connect(self.rigs[name])
        for _ in range(FINAL_SETTLE_SECONDS // 10):
            self.settle(10.0)
        verdict = Verdict(self.seed, self.ops, alarms=list(self.alarms))
        acknowledged = [s for s in self.sent if s.server_seq is not None]
        verdict.messages = len(acknowledged)
        verdict.lost = [s for s in self.sent if s.server_seq is None]
        stored = self._stored()
        verdict.lost += [s for s in acknowledged if (s.room, s.server_seq) not in stored]
        verdict.duplicated = [k for k, n in stored.items() if n > 1]
        for name in USERS:
            seen = self.shown[name]
            verdict.duplicated += [(name, k) for k in set(seen) if seen.count(k) > 1]
            for sent in acknowledged:
                key = (sent.room, sent.server_seq)
                entitled, ever = self._entitled(name, sent)
                if entitled:
                    verdict.pairs += 1
                    if key not in seen:
                        verdict.unreadable.append((name, sent.text))
                elif key in seen and not ever:
                    verdict.leaked.append((name, sent.text))
        return verdict

    def _stored(self) -> dict:
        connection = self.net.server.service.store._runner.connection
        rows = connection.execute("SELECT r.folded, m.server_seq FROM messages m"
                                  " JOIN rooms r ON r.id = m.room_id").fetchall()
        counts: dict = {}
        for room, seq in rows:
            counts[(room, seq)] = counts.get((room, seq), 0) + 1
        return counts

    def _entitled(self, name: str, sent: Sent) -> tuple[bool, bool]:
        """Whether C{name} must have read C{sent}, and whether they may have.

        Must: a member now, in the membership it was sent in; or a member who
        joined later while the room shared its history since before the
        message, which no restart of shared history (no member held the key
        any more) cut off. May: a member
        when it was sent (in any membership), or let in later while the room
        shared its history since before it.
        """
        state = self.state(sent.room)
        fingerprint = state.by_nick(name) if state is not None else None
        may = name in sent.members or any(
            name in members and boundary is not None and boundary == sent.boundary
            for members, boundary in self.snapshots.get(sent.room, ()))
        if fingerprint is None:
            return False, may
        since = state.members[fingerprint].since
        if name in sent.members and since < sent.log_length:
            return True, True
        restarts = [info.index for info in state.epochs.values() if info.restart]
        shared = sent.boundary is not None and state.history == "shared" \
            and state.boundary == sent.boundary and since >= sent.log_length \
            and not any(index >= sent.log_length for index in restarts)
        return shared, may or shared

    def snapshot(self) -> None:
        """Each room's members and shared-history boundary after a step."""
        for room in ROOMS:
            state = self.state(room)
            if state is not None:
                self.snapshots.setdefault(fold(room), []).append((
                    frozenset(m.nick for m in state.members.values()),
                    state.boundary if state.history == "shared" else None))


def run(seed: int, ops: int, path: str) -> Verdict:
    return Churn(seed, ops, path).run()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.churn", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--show", type=int, default=5,
                        help="how many of each failing kind to list")
    options = parser.parse_args(argv)
    import tempfile
    with tempfile.TemporaryDirectory(prefix="securechat-churn-") as folder:
        verdict = run(options.seed, options.ops, f"{folder}/securechat.sqlite")
    print(verdict.summary())
    for kind in ("unreadable", "leaked", "lost", "duplicated", "alarms"):
        for item in getattr(verdict, kind)[:options.show]:
            print(f"  {kind}: {item}")
    return 1 if verdict.failed else 0


if __name__ == "__main__":
    sys.exit(main())
