# -*- test-case-name: tests.test_client_session -*-
"""Showing messages: check each against the room's log, verify, decrypt,
wait for a key when one is missing, and say why whenever a message cannot
be shown; never silence.

The sender's key is the one the room's log gives their nick, not what the
server says; the envelope names the sender's log, so a message from a
member shown another log exposes the fork; and a message under a key that
a removed member still holds, delivered after the removal, is shown with
a warning naming its sender. Earlier messages fetched with /history pass
the same checks, and their order and ids are checked within the page.
"""

import time
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.error import ConnectionLost

from securechat.client.state import (
    SEEN_IDS_PER_ROOM,
    UNREADABLE_PER_ROOM,
    Incoming,
    LocalRoom,
    ReportThrottle,
    SharedOperations,
)
from securechat.crypto.envelope import (
    EnvelopeError,
    MessageHeader,
    open_sealed,
    verify_signature,
)
from securechat.names import fold
from securechat.wire import WireError

# Sequence numbers remembered per sender as not yet seen below the highest
# one seen: a late message may fill one; anything else at or below is a replay.
MAX_HOLES_PER_SENDER = 1000

# The notice, once per room, for messages from before the user's own key
# was replaced (an operator reset): no member could ever have given it them.
BEFORE_KEY = "sent before this key existed"


@dataclass
class Verdict:
    """What checking one message against the log found."""

    envelope: object = None
    sender: object = None
    # "key" or "accept": the message may be shown once that arrives.
    waits: str = ""
    kind: str = ""
    reason: str = ""
    warnings: list = field(default_factory=list)


class Reception:
    """Incoming messages of one L{securechat.client.session.ClientSession}."""

    def __init__(self, session):
        self._session = session
        self._faults = ReportThrottle()
        self._fetches = SharedOperations()
        # Epochs whose wraps we asked the server for again, once, before giving up.
        self._wraps_asked: set[tuple[str, int]] = set()

    # -- arriving ------------------------------------------------------------------------

    def on_message(self, room, server_seq, sender, epoch, seq, message_id, token, signature,
                   received_ms, live: bool = False) -> None:
        """A MESSAGE line; C{live} if the server pushed it as it was stored
        (not in a reply to a catch-up)."""
        session = self._session
        local = session.rooms.get(fold(room))
        if local is None:
            return
        incoming = Incoming(room, server_seq, sender, epoch, seq, message_id, token, signature,
                            received_ms)
        log_ = session.logs.get(room)
        # What this client knew of the room when the message came: a removal it
        # knew by then is one the server did too (see L{_removal_warnings}).
        incoming.log_seen = log_.length if log_ is not None and live else 0
        local.last_seq = max(local.last_seq, server_seq)
        if message_id.hex() in local.seen or any(
            m.message_id == message_id for m in local.pending
        ):
            return
        local.pending.append(incoming)
        self._enqueue(local, incoming)

    def unreadable_line(self, unreadable) -> None:
        """The server sent a line we cannot read: say so (within reason) and
        read on. A message among them is reported as one, and our position
        moves past it, so that catching up never fetches it again."""
        session = self._session
        fields = unreadable.fields
        room = session.rooms.get(fold(fields["room"])) if "room" in fields else None
        if unreadable.verb == "MESSAGE" and room is not None and "server_seq" in fields:
            seq = fields["server_seq"]
            if seq in room.unreadable:
                return
            room.unreadable.append(seq)
            del room.unreadable[:-UNREADABLE_PER_ROOM]
            room.last_seq = max(room.last_seq, seq)
            if isinstance(fields.get("seq"), int) and "sender" in fields:
                self._remember(room, fields["sender"], fields["seq"], None, announce=False)
            session.save()
            if self._may_report():
                sender = fields.get("sender", "someone")
                session.emit("undecryptable", room=room.name, server_seq=seq, nick=sender,
                             reason=f"the server sent it malformed ({unreadable.reason})",
                             message=f"a message from {sender} could not be shown: the server "
                                     f"sent it malformed ({unreadable.reason})")
            return
        if self._may_report():
            what = f"a {unreadable.verb} line" if unreadable.verb else "a line"
            session.emit("error", code="PROTOCOL",
                         message=f"the server sent {what} this client cannot read "
                                 f"({unreadable.reason}); it was passed over")

    def _may_report(self) -> bool:
        """Whether a fault may be shown now; those held back are counted in one
        notice a minute later."""
        clock = self._session.clock
        if self._faults.allow(clock.seconds()):
            return True
        if self._faults.held == 1:
            clock.callLater(60, self._report_held_faults)
        return False

    def _report_held_faults(self) -> None:
        held = self._faults.take_held()
        if held:
            self._session.emit("error", code="PROTOCOL",
                               message=f"{held} more unreadable line{'s' if held > 1 else ''} "
                                       f"from the server were passed over; it may be faulty "
                                       f"or hostile")

    def retry(self, room: LocalRoom) -> None:
        """Look again at every message of C{room} still waiting (a key or a log came)."""
        for message in sorted(room.pending, key=lambda m: m.server_seq):
            self._enqueue(room, message)

    def _enqueue(self, room: LocalRoom, message: Incoming) -> None:
        room.chain.addCallback(lambda _: self._try_show(room, message))
        room.chain.addErrback(self._session.event_failed, "MESSAGE")

    # -- checking ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _try_show(self, room: LocalRoom, message: Incoming):
        session = self._session
        if message not in room.pending:
            return
        log_ = yield self.current_log(room)
        if message not in room.pending:
            return
        verdict = yield self.check(room.name, log_, message, live=True)
        if message not in room.pending:
            return
        if verdict.waits == "accept":
            self._announce(room, message, f"message from {message.sender} waits until you "
                                          f"accept their new key: /verify {message.sender}, "
                                          f"then /accept {message.sender}")
            return
        if verdict.waits == "key":
            self._need_key(room, log_, message)
            return
        if verdict.kind:
            self._settle(room, message, verdict)
            return
        room.pending.remove(message)
        if not self._remember(room, message.sender, message.seq, message.message_id):
            verdict.kind, verdict.reason = "verification_failed", (
                f"{message.sender} already sent seq {message.seq}: a replay")
            self._settle(room, message, verdict, recorded=True)
            return
        if message.epoch == room.epoch:
            room.epoch_load += 1
        for warning in verdict.warnings:
            session.emit("warning", room=room.name, server_seq=message.server_seq,
                         nick=message.sender, message=warning)
        envelope = verdict.envelope
        session.emit("message", room=room.name, server_seq=message.server_seq,
                     **{"from": message.sender}, text=envelope.body, time=envelope.timestamp,
                     epoch=message.epoch)
        session.save()

    def current_log(self, room: LocalRoom) -> defer.Deferred:
        """The room's log, fetched first up to the length the server announced."""
        session = self._session
        log_ = session.logs.open(room.name)
        if log_.length >= room.log_length:
            return defer.succeed(log_)
        return session.log_sync.fetch(room.name, room.log_length).addErrback(
            lambda f: (f.trap(WireError, ConnectionLost), log_)[1])

    @defer.inlineCallbacks
    def check(self, room: str, log_, message, live: bool = False):
        """Check one message (an L{Incoming}, or a HISTORY line's fields as one)
        against the room's log; @return: a L{Verdict}."""
        session = self._session
        verdict = Verdict()
        state = log_.state
        header = MessageHeader(room, message.epoch, message.seq, message.message_id)
        current = state.by_nick(message.sender)
        if current is not None and _signed_by(state.keys[current], header, message):
            verdict.sender = state.keys[current]
        else:
            # A departed member, a key since replaced, a log not fetched yet: look wider.
            candidates = yield self._keys_of(room, log_, message.sender, message.epoch)
            if not candidates:
                verdict.kind = "verification_failed"
                verdict.reason = (f"the room's log has no member {message.sender}: the server "
                                  f"made it up or put it under another name")
                return verdict
            verdict.sender = next((identity for identity in candidates
                                   if _signed_by(identity, header, message)), None)
        if verdict.sender is None:
            verdict.kind, verdict.reason = "verification_failed", "signature does not verify"
            return verdict
        sender = verdict.sender
        pins = session.peers.pins
        changed = pins.changed(message.sender)
        owner = pins.nick_of(sender.fingerprint)
        if owner is not None and fold(owner) != fold(message.sender):
            verdict.kind = "verification_failed"
            verdict.reason = f"signed with {owner}'s key under the nick {message.sender}"
            return verdict
        if changed is not None and changed.fingerprint == sender.fingerprint:
            verdict.waits = "accept"
            return verdict
        key = session.keys.key(room, message.epoch)
        if key is None:
            verdict.waits = "key"
            return verdict
        try:
            verdict.envelope = open_sealed(key, sender, header, message.token, message.signature)
        except EnvelopeError as error:
            verdict.kind, verdict.reason = "verification_failed", error.reason
            return verdict
        position = verdict.envelope.log
        if position is not None:
            fits = log_.names_head(position.length, position.head)
            if fits == "ahead":
                yield session.log_sync.fetch(room, position.length).addErrback(
                    lambda f: f.trap(WireError, ConnectionLost))
                fits = log_.names_head(position.length, position.head)
                if fits == "ahead":
                    verdict.warnings.append(
                        f"{message.sender} saw {position.length} entries of {room}'s log; the "
                        f"server gives you {log_.length}: it may be withholding the log")
            if fits == "fork":
                # The sender signed that head: two logs exist, and nothing more is sent.
                if log_.forked is None:
                    log_.forked = position.length - 1
                session.room_forked(room, f"{message.sender}'s message names a log of {room} "
                                          f"that is not yours: the server is showing members "
                                          f"different rooms")
                verdict.warnings.append(f"{message.sender} was shown another log of {room}")
        if live:
            verdict.warnings.extend(self._removal_warnings(state, message, position))
        return verdict

    @defer.inlineCallbacks
    def _keys_of(self, room: str, log_, nick: str, epoch: int):
        """The identities the log gives C{nick}, newest first; for a message from
        before the log, the pinned one."""
        state = log_.state
        found = [identity for fp, identity in state.keys.items()
                 if fold(state.names.get(fp, "")) == fold(nick)]
        local = self._session.rooms.get(fold(room))
        if not found and local is not None and log_.length < local.log_length:
            yield self._session.log_sync.fetch(room).addErrback(
                lambda f: f.trap(WireError, ConnectionLost))
            found = [identity for fp, identity in state.keys.items()
                     if fold(state.names.get(fp, "")) == fold(nick)]
        current = state.by_nick(nick)
        found.sort(key=lambda i: i.fingerprint != current)
        if not found and (not log_.length or epoch <= state.legacy_epoch):
            pinned = yield self._session.peers.identity_of(nick)
            found = [pinned] if pinned is not None else []
        return found

    @staticmethod
    def _removal_warnings(state, message: Incoming, position) -> list[str]:
        """A message under a key a removed member holds, delivered after this
        client knew of the removal: an honest server refuses those (the sender
        must re-key first), so the removed member may have read it."""
        info = state.epochs.get(message.epoch)
        if info is None:
            return []
        warnings = []
        holders = state.holders.get(message.epoch, ())
        for index, gone in state.removed_after(info.index):
            if index >= message.log_seen or gone not in holders:
                continue
            name = state.names.get(gone, "a former member")
            knew = position is not None and position.length > index
            warnings.append(
                f"{message.sender} sent this under a key {name} still holds after leaving"
                + ("" if knew else f"; {message.sender} had not seen {name} leave: the server "
                                   f"may be hiding the room's log from {message.sender}")
                + f". {name} may be able to read it")
        return warnings

    # -- keys ---------------------------------------------------------------------------

    def _need_key(self, room: LocalRoom, log_, message: Incoming) -> None:
        """A message waits for its key: get it if it can come, else say why not."""
        session = self._session
        state, epoch = log_.state, message.epoch
        self._announce(room, message, f"message from {message.sender} waits for the key of "
                                      f"epoch {epoch}")
        legacy = not log_.length or epoch <= state.legacy_epoch
        if f"{fold(room.name)}|{epoch}" in self._fetches:
            # Its keys are being fetched; the fetch looks at it again.
            return
        if (legacy or epoch not in state.epochs or state.holds(session.identity.fingerprint,
                                                                epoch)) \
                and (fold(room.name), epoch) not in self._wraps_asked:
            # Its record (before the log) or our wrap may be on the server and
            # its push lost (another daemon stored it): ask once, then decide.
            self._wraps_asked.add((fold(room.name), epoch))
            d = self._fetches.run(f"{fold(room.name)}|{epoch}", lambda: self._fetch_keys(
                room.name, epoch, epoch not in state.epochs and not legacy))
            d.addCallback(lambda _: self.retry(room))
            d.addErrback(session.passing_failure)
            return
        wait, reason = self.why_unreadable(room.name, log_, epoch)
        if wait:
            session.keywaits.request(room.name)
            return
        self._give_up(room, epoch, reason)

    @defer.inlineCallbacks
    def _fetch_keys(self, room: str, epoch: int, log_too: bool):
        session = self._session
        if log_too:
            yield session.log_sync.fetch(room)
        yield session.request("EPOCHS", room, str(epoch))

    def why_unreadable(self, room: str, log_, epoch: int) -> tuple[bool, str]:
        """Whether a key for C{epoch} may still come (True, and nothing to say),
        or the true reason it never will."""
        session = self._session
        state, me = log_.state, session.identity.fingerprint
        info = state.epochs.get(epoch)
        if not log_.length or epoch <= state.legacy_epoch:
            if session.keys.commitment(room, epoch) is None:
                return False, (f"it names key epoch {epoch}, which the server does not know; "
                               f"it was altered or misdirected")
            return False, (f"it was sent in key epoch {epoch}, before {room} had a signed log, "
                           f"before you joined or while you were not a member; you were never "
                           f"given its key")
        if info is None:
            return False, (f"it names key epoch {epoch}, which {room}'s log does not have: the "
                           f"server altered it, or withholds the log")
        if self._unlocked_by_current(state, epoch):
            return session.keys.key(room, state.epoch) is None, (
                "the room's newest key does not unlock it")
        if state.holds(me, epoch):
            if epoch == state.epoch:
                return True, ""
            return False, (f"you were given the key of epoch {epoch}, but the server has not "
                           f"delivered it: it may be withholding it")
        if state.in_shared_segment(info):
            cut = [e.index for e in state.epochs.values() if e.restart and e.index > info.index]
            if cut:
                return False, (f"no member held its key any more when {room}'s shared "
                               f"history restarted (entry {min(cut)} of its log)")
        since = session.member_since(state)
        replacing = me not in state.members and state.by_nick(session.nick) is not None
        if replacing or session.rekeyed_at(state) > info.index:
            return False, BEFORE_KEY
        if info.index < since:
            if state.history == "shared" and state.boundary is not None \
                    and info.index < state.boundary:
                return False, f"it was sent before {room} began sharing its history"
            return False, (f"it was sent before you joined {room} (or while you were away); "
                           f"what is said there before a member joins is not shared")
        made_by = state.names.get(info.author, "a member")
        if epoch == state.epoch:
            return True, ""
        return False, (f"{made_by} made the key of epoch {epoch} without you (they had not "
                       f"accepted or verified your key); you were never given it")

    @staticmethod
    def _unlocked_by_current(state, epoch: int) -> bool:
        """Whether the current key reaches C{epoch}'s through the shared chain."""
        info = state.epochs.get(epoch)
        if info is None or not state.in_shared_segment(info) or not state.chains():
            return False
        return all(state.epochs[e].prev_box for e in range(epoch + 1, state.epoch + 1))

    def _give_up(self, room: LocalRoom, epoch: int, reason: str) -> None:
        waiting = [m for m in room.pending if m.epoch == epoch]
        if reason == BEFORE_KEY:
            self._before_key(room, waiting)
            return
        for message in waiting:
            self._settle(room, message, Verdict(kind="undecryptable", reason=reason))

    def _before_key(self, room: LocalRoom, messages: list) -> None:
        """Messages from before the user's key was replaced: told once per room,
        with the time the first of them was sent, then passed over."""
        session = self._session
        for message in messages:
            room.pending.remove(message)
            room.seen.append(message.message_id.hex())
        if messages and "before_key" not in room.told:
            room.told.add("before_key")
            first = min(messages, key=lambda m: m.server_seq)
            session.emit("undecryptable", room=room.name, server_seq=first.server_seq,
                         nick=first.sender, reason=BEFORE_KEY, time=first.received_ms / 1000,
                         message=f"earlier messages in {room.name}, from "
                                 f"{_when(first.received_ms)} on, were {BEFORE_KEY}: your "
                                 f"key was reset, and no member could give it them")
        session.save()

    # -- settling -----------------------------------------------------------------------

    def _announce(self, room: LocalRoom, message: Incoming, text: str) -> None:
        if not message.announced:
            message.announced = True
            self._session.emit("message_pending", room=room.name, server_seq=message.server_seq,
                               nick=message.sender, epoch=message.epoch, message=text)

    def _settle(self, room: LocalRoom, message: Incoming, verdict: Verdict,
                recorded: bool = False) -> None:
        """Give up on showing a message, and say why: never silence. A message
        whose signature held is counted as its sender's, so no gap is reported
        for it later."""
        session = self._session
        if message in room.pending:
            room.pending.remove(message)
        if verdict.sender is not None and not recorded:
            self._remember(room, message.sender, message.seq, None, announce=False)
        elif not recorded:
            # Its seq is the server's word: not recorded as seen (a later message
            # under it is no replay), only never counted missing as well.
            reported = room.senders.setdefault(fold(message.sender), {
                "first": message.seq, "last": message.seq - 1, "holes": []})
            reported.setdefault("reported", []).append(message.seq)
            del reported["reported"][:-MAX_HOLES_PER_SENDER]
        room.seen.append(message.message_id.hex())
        what = "cannot be read" if verdict.kind == "undecryptable" else "failed verification"
        session.emit(verdict.kind, room=room.name, server_seq=message.server_seq,
                     nick=message.sender, time=message.received_ms / 1000,
                     message=f"message from {message.sender} {what}: {verdict.reason}",
                     reason=verdict.reason)
        session.save()

    def _remember(self, room: LocalRoom, nick: str, seq: int, message_id: bytes | None,
                  announce: bool = True) -> bool:
        """Record a verified message's (sender, seq); @return: False if that seq was
        already shown (a replay older than the remembered message ids).

        Per sender we keep the lowest and highest seq seen and the seqs between
        them still missing; a seq in that range that is not missing is a replay.
        """
        sender = fold(nick)
        state = room.senders.get(sender)
        if state is None:
            state = room.senders[sender] = {"first": seq, "last": seq, "holes": []}
        else:
            first, last, holes = state["first"], state["last"], state["holes"]
            if first <= seq <= last and seq not in holes:
                return False
            if seq in holes:
                holes.remove(seq)
            elif seq < first:
                _add_holes(state, seq + 1, first)
                state["first"] = seq
            else:
                missing = seq - last - 1 - sum(1 for r in state.get("reported", ())
                                               if last < r < seq)
                if state.pop("resume", False):
                    missing = 0
                if announce and missing > 0 and not any(fold(m.sender) == sender
                                                        for m in room.pending):
                    self._session.emit("gap", room=room.name, nick=nick, missing=missing,
                                       message=f"{missing} message{'s' if missing > 1 else ''} "
                                               f"from {nick} missing")
                _add_holes(state, last + 1, seq)
                state["last"] = seq
        if message_id is not None:
            room.seen.append(message_id.hex())
            del room.seen[:-SEEN_IDS_PER_ROOM]
        return True

    # -- /history -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def history(self, room_name: str, count: int):
        """The last C{count} messages of a room, each checked as a live one is,
        and their order and ids checked within the page (for display)."""
        session = self._session
        room = session.room(room_name)
        log_ = yield self.current_log(room)
        lines, before = [], 2**62
        while len(lines) < count:
            # A page holds what the server's reply budget allows: ask on before
            # the oldest one until there are enough, or no more.
            reply = yield session.request("HISTORY", room.name, "before", str(before),
                                          str(count - len(lines)), process=False)
            page = [args for verb, args in reply.lines if verb == "MESSAGE"]
            if not page or min(a["server_seq"] for a in page) >= before:
                break
            before = min(a["server_seq"] for a in page)
            lines = page + lines
        shown, ids, last_seq, senders = [], set(), None, {}
        for args in lines:
            message = Incoming(room.name, args["server_seq"], args["sender"], args["epoch"],
                               args["seq"], args["message_id"], args["token"],
                               args["signature"], args["received_ms"])
            row = {"room": room.name, "from": message.sender, "server_seq": message.server_seq,
                   "text": None}
            problem = None
            if message.message_id in ids:
                problem = "the server sent this message twice"
            elif last_seq is not None and message.server_seq <= last_seq:
                problem = "the server sent it out of order"
            elif message.seq <= senders.get(fold(message.sender), 0):
                problem = (f"{message.sender}'s seq {message.seq} comes after a later one: "
                           f"replayed or reordered")
            ids.add(message.message_id)
            last_seq = message.server_seq
            senders[fold(message.sender)] = max(senders.get(fold(message.sender), 0),
                                                message.seq)
            verdict = yield self.check(room.name, log_, message)
            if problem is not None:
                row["reason"] = problem
            elif verdict.waits == "accept":
                row["reason"] = f"sent with {message.sender}'s new key, not accepted yet"
            elif verdict.waits == "key":
                row["reason"] = self.why_unreadable(room.name, log_, message.epoch)[1] or \
                    "its key has not arrived yet"
            elif verdict.kind:
                row["reason"] = verdict.reason
            else:
                row.update(text=verdict.envelope.body, time=verdict.envelope.timestamp)
                if verdict.warnings:
                    row["warnings"] = verdict.warnings
            shown.append(row)
        return shown


def _signed_by(identity, header: MessageHeader, message) -> bool:
    try:
        verify_signature(identity, header, message.token, message.signature)
    except EnvelopeError:
        return False
    return True


def _add_holes(state: dict, start: int, stop: int) -> None:
    """Remember seqs start..stop-1 as missing, keeping only the newest ones; the
    oldest forgotten ones raise the floor below which nothing is judged."""
    holes = state["holes"]
    holes.extend(range(max(start, stop - MAX_HOLES_PER_SENDER), stop))
    if len(holes) > MAX_HOLES_PER_SENDER:
        holes.sort()
        del holes[:-MAX_HOLES_PER_SENDER]
    if stop - start > MAX_HOLES_PER_SENDER or len(holes) == MAX_HOLES_PER_SENDER:
        state["first"] = max(state["first"], min(holes) if holes else stop)


def _when(received_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(received_ms / 1000))
