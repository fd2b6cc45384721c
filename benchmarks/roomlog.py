"""What room logs cost: replaying a long log (a client catching up checks
every signature; the daemon, loading it, checks none), and a newcomer
joining a room at the member limit, rotation included: the newcomer fetches
and checks the room's log and signs its join, the server checks the join
and the epoch, and a holder makes the epoch, one wrap per member.

Measured in one process with the real code (securechat.roomlog, the
client's RoomLog), without a network: the costs are the CPU's.
"""

import time

from benchmarks import identities
from securechat.client.roomlog import RoomLog
from securechat.roomlog import RoomState, author, replay

ROOM = "#bench"

# A long log is joins and parts of this many people, an epoch every
# EPOCH_EVERY entries: the shape of a busy room's years.
PEOPLE = 50
EPOCH_EVERY = 50


def _long_log(length: int, people) -> list:
    """C{length} signed entries: a room that people keep joining and leaving."""
    state, entries = RoomState(room=ROOM), []

    def add(signed):
        state.apply(signed, verify=False)
        entries.append(signed)

    add(author.genesis(people[0], ROOM, "p0", 0))
    turn = 0
    while len(entries) < length:
        if len(entries) % EPOCH_EVERY == 0:
            others = [state.keys[fp] for fp in sorted(state.members) if fp != people[0].fingerprint]
            add(author.epoch(people[0], state, [people[0].public, *others[:4]], "benchmark",
                             0)[1])
            continue
        turn = turn % (len(people) - 1) + 1
        person = people[turn]
        if person.fingerprint in state.members:
            add(author.part(person, state, "", 0))
        else:
            add(author.join(person, state, f"p{turn}", 0))
    return entries


def _room_of(members: int, people) -> tuple[list, RoomState]:
    """A room of C{members} members with a first key: its entries and state."""
    state, entries = RoomState(room=ROOM), []
    for n, person in enumerate(people[:members]):
        signed = author.genesis(person, ROOM, "p0", 0) if n == 0 else \
            author.join(person, state, f"p{n}", 0)
        state.apply(signed, verify=False)
        entries.append(signed)
    recipients = [state.keys[fp] for fp in sorted(state.members)]
    signed = author.epoch(people[0], state, recipients, "first key", 0)[1]
    state.apply(signed, verify=False)
    entries.append(signed)
    return entries, state


def _seconds(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def measure(log_length: int = 10_000, members: int = 500) -> list[tuple[str, str]]:
    """(what, cost) rows."""
    identities.ensure(members + 1)
    people = list(identities.load(range(members + 1)).values())
    entries = _long_log(log_length, people[:PEOPLE])
    checked, _ = _seconds(lambda: replay(entries))
    trusted, _ = _seconds(lambda: replay(entries, verify=False))
    room, state = _room_of(members, people)
    newcomer = people[members]

    def newcomer_checks():
        log = RoomLog(ROOM)
        for index, signed in enumerate(room):
            log.extend(index, signed)
        return log

    fetched, log = _seconds(newcomer_checks)
    signing, join = _seconds(lambda: author.join(newcomer, log.state, "newcomer", 0))
    server_join, _ = _seconds(lambda: state.apply(join))
    recipients = [state.keys[fp] for fp in sorted(state.members)]
    rotating, (_, epoch, _) = _seconds(lambda: author.epoch(
        people[0], state, recipients, "newcomer joined", 0))
    server_epoch, _ = _seconds(lambda: state.copy().apply(epoch))
    total = fetched + signing + server_join + rotating + server_epoch
    return [
        (f"replay a {len(entries):,}-entry room log, every signature checked (a client)",
         f"{checked * 1000:.0f} ms"),
        ("replay it trusted, no signature checked (the daemon loading it)",
         f"{trusted * 1000:.0f} ms"),
        (f"a newcomer joins a room of {members} members, rotation included",
         f"{total * 1000:.0f} ms: checking its log {fetched * 1000:.0f}, signing the join "
         f"{signing * 1000:.0f}, the server's checks {(server_join + server_epoch) * 1000:.0f}, "
         f"the holder's epoch ({len(recipients)} wraps) {rotating * 1000:.0f}"),
    ]
