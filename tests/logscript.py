"""Room log entries, rotations and messages as honest members make them,
for scripted clients (tests.serverharness) that speak the wire protocol by
hand. One L{Members} keeps each room's log as the server accepted it, so a
test can act as any member in turn."""

import os

from securechat.crypto.envelope import LogPosition, MessageHeader, seal
from securechat.names import fold
from securechat.roomlog import RoomState, author
from securechat.wire import b64encode
from tests.identities import identity

# The time every scripted entry carries.
NOW = 1000


def fingerprint(name: str) -> bytes:
    return identity(name).fingerprint


def accepted(frames) -> bool:
    return any(f.verb == "OK" for f in frames) and not any(f.verb == "ERROR" for f in frames)


class Members:
    """Every room's log as the server accepted it, and the keys of its epochs."""

    def __init__(self):
        self.states: dict[str, RoomState] = {}
        self.keys: dict[tuple[str, int], bytes] = {}
        self.seqs: dict[tuple[str, str], int] = {}

    def state(self, room: str) -> RoomState:
        return self.states.setdefault(fold(room), RoomState(room=room))

    def send(self, client, verb: str, room: str, signed, *extra: str):
        """Send an entry with C{verb}; the log takes it if the server did."""
        frames = client.request(verb, room, str(signed.entry.index), b64encode(signed.data),
                                b64encode(signed.signature), *extra)
        rooms = [f for f in frames if f.verb == "ROOM"]
        # A JOIN by a member already in changes nothing: its ROOM line says so.
        stored = not rooms or int(rooms[0].args[6]) > signed.entry.index
        if accepted(frames) and stored:
            self.state(room).apply(signed)
        return frames

    # -- entries ------------------------------------------------------------------

    def join(self, client, name: str, room: str, password: str | None = None,
             nick: str | None = None):
        """Create the room (a genesis) or join it (with the invite the log holds, if any)."""
        state, me = self.state(room), identity(name)
        if not state.length:
            signed = author.genesis(me, room, nick or name, NOW)
        else:
            invite = next((h for h, i in state.invites.items()
                           if i.invitee == me.fingerprint), b"")
            signed = author.join(me, state, nick or name, NOW, invite)
        return self.send(client, "JOIN", room, signed, *([password] if password else []))

    def append(self, client, name: str, room: str, build):
        """APPEND the entry C{build(identity, state)} makes."""
        return self.send(client, "APPEND", room, build(identity(name), self.state(room)))

    def part(self, client, name, room, reason=""):
        return self.append(client, name, room, lambda me, s: author.part(me, s, reason, NOW))

    def kick(self, client, name, room, target, ban=False, reason=""):
        return self.append(client, name, room, lambda me, s: author.kick(
            me, s, fingerprint(target), reason, NOW, ban=ban))

    def unban(self, client, name, room, target):
        return self.append(client, name, room,
                           lambda me, s: author.unban(me, s, fingerprint(target), NOW))

    def invite(self, client, name, room, invitee):
        return self.append(client, name, room, lambda me, s: author.invite(
            me, s, identity(invitee).public, invitee, NOW))

    def role(self, client, name, room, target, role):
        return self.append(client, name, room,
                           lambda me, s: author.role(me, s, fingerprint(target), role, NOW))

    def policy(self, client, name, room, invite_only=None, history=None):
        return self.append(client, name, room, lambda me, s: author.policy(
            me, s, NOW, invite_only=invite_only, history=history))

    def share(self, client, name, room, recipient):
        return self.append(client, name, room,
                           lambda me, s: author.share(me, s, fingerprint(recipient), NOW))

    # -- keys and messages ------------------------------------------------------------

    def rotate(self, client, name: str, room: str, members=None, history=None):
        """A new epoch for C{members} (default: everyone the log has), its wraps
        handed over first. @return: (frames, wraps by fingerprint)."""
        if history is not None:
            self.policy(client, name, room, history=history)
        state = self.state(room)
        recipients = [state.keys[fp] for fp in sorted(state.members)] if members is None \
            else [identity(m).public for m in members]
        previous = self.keys.get((fold(room), state.epoch)) if state.chains() else None
        key, signed, wraps = author.epoch(identity(name), state, recipients, "test", NOW,
                                          previous)
        number = signed.entry.body["epoch"]
        me = fingerprint(name)
        pairs = " ".join(f"{b64encode(fp)}:{b64encode(w)}" for fp, w in sorted(wraps.items())
                         if fp != me)
        frames = client.request("WRAPS", room, str(number), pairs) if pairs else []
        frames += self.send(client, "ROTATE", room, signed, b64encode(wraps[me]))
        if accepted(frames[-1:]):
            self.keys[(fold(room), number)] = key
        return frames, wraps

    def message(self, client, sender: str, room: str, epoch: int | None = None, text="hi",
                seq: int | None = None, message_id: bytes | None = None):
        state = self.state(room)
        epoch = state.epoch if epoch is None else epoch
        if seq is None:
            seq = self.seqs[(sender, fold(room))] = self.seqs.get((sender, fold(room)), 0) + 1
        message_id = message_id or os.urandom(16)
        token, signature = seal(self.keys[(fold(room), epoch)], identity(sender),
                                MessageHeader(room, epoch, seq, message_id), text, 1,
                                LogPosition(state.length, state.head))
        return client.request("MSG", room, str(epoch), str(seq), b64encode(message_id),
                              b64encode(token), b64encode(signature))
