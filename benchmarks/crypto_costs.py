"""Client-side crypto costs: what a sender and a reader pay per message, and
what a key rotation costs the member who makes it."""

import time

from benchmarks import identities
from securechat.crypto.envelope import LogPosition, MessageHeader, open_sealed, seal
from securechat.crypto.roomkeys import new_room_key
from securechat.roomlog import RoomState, author

ROUNDS = 50


def _each(function, rounds: int = ROUNDS) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        function()
    return (time.perf_counter() - started) / rounds


def measure(members: int = 500) -> list[tuple[str, str]]:
    """(what, cost) rows; a rotation wraps the new key once per member."""
    identities.ensure(1)
    sender = identities.load([0])[0]
    key = new_room_key()
    header = MessageHeader("#bench", 1, 1, b"\0" * 16)
    body = "x" * 200
    at = LogPosition(1, b"\0" * 32)
    token, signature = seal(key, sender, header, body, 0, at)
    seal_cost = _each(lambda: seal(key, sender, header, body, 0, at))
    open_cost = _each(lambda: open_sealed(key, sender.public, header, token, signature))
    state = RoomState(room="#bench")
    state.apply(author.genesis(sender, "#bench", "bench", 0), verify=False)
    roster = [sender.public] * members
    started = time.perf_counter()
    author.epoch(sender, state, roster, "benchmark", 0)
    rotation = time.perf_counter() - started
    return [
        ("encrypt and sign one message", f"{seal_cost * 1000:.2f} ms"),
        ("verify and decrypt one message", f"{open_cost * 1000:.2f} ms"),
        (f"key rotation for {members} members ({members} wraps)", f"{rotation * 1000:.0f} ms"),
    ]
