# -*- test-case-name: tests.test_client_session -*-
"""Showing messages: verify, decrypt, wait for a key when one is missing,
and say why whenever a message cannot be shown; never silence."""

from twisted.internet import defer
from twisted.internet.error import ConnectionLost

from securechat.client.state import SEEN_IDS_PER_ROOM, UNREADABLE_PER_ROOM, Incoming, LocalRoom
from securechat.crypto.envelope import EnvelopeError, MessageHeader, open_sealed
from securechat.names import fold
from securechat.wire import WireError

# Sequence numbers remembered per sender as not yet seen below the highest
# one seen: a late message may fill one; anything else at or below is a replay.
MAX_HOLES_PER_SENDER = 1000


class MessageReception:
    """Part of L{securechat.client.session.ClientSession}; see there for the state
    it uses."""

    def _on_message(self, room, server_seq, sender, epoch, seq, message_id, token, signature,
                    received_ms):
        local = self.rooms.get(fold(room))
        if local is None:
            return None
        incoming = Incoming(room, server_seq, sender, epoch, seq, message_id, token, signature,
                            received_ms)
        local.last_seq = max(local.last_seq, server_seq)
        if message_id.hex() in local.seen or any(
            m.message_id == message_id for m in local.pending
        ):
            return None
        local.pending.append(incoming)
        self._enqueue(local, incoming)
        return None

    def unreadable_line(self, unreadable) -> None:
        """The server sent a line we cannot read: say so (within reason) and
        read on. A message among them is reported as one, and our position
        moves past it, so that catching up never fetches it again."""
        fields = unreadable.fields
        room = self.rooms.get(fold(fields["room"])) if "room" in fields else None
        if unreadable.verb == "MESSAGE" and room is not None and "server_seq" in fields:
            seq = fields["server_seq"]
            if seq in room.unreadable:
                return
            room.unreadable.append(seq)
            del room.unreadable[:-UNREADABLE_PER_ROOM]
            room.last_seq = max(room.last_seq, seq)
            self.save()
            if self._may_report():
                sender = fields.get("sender", "someone")
                self.emit("undecryptable", room=room.name, server_seq=seq, nick=sender,
                          reason=f"the server sent it malformed ({unreadable.reason})",
                          message=f"a message from {sender} could not be shown: the server "
                                  f"sent it malformed ({unreadable.reason})")
            return
        if self._may_report():
            what = f"a {unreadable.verb} line" if unreadable.verb else "a line"
            self.emit("error", code="PROTOCOL",
                      message=f"the server sent {what} this client cannot read "
                              f"({unreadable.reason}); it was passed over")

    def _may_report(self) -> bool:
        """Whether a fault may be shown now; those held back are counted in one
        notice a minute later."""
        if self._faults.allow(self.clock.seconds()):
            return True
        if self._faults.held == 1:
            self.clock.callLater(60, self._report_held_faults)
        return False

    def _report_held_faults(self) -> None:
        held = self._faults.take_held()
        if held:
            self.emit("error", code="PROTOCOL",
                      message=f"{held} more unreadable line{'s' if held > 1 else ''} from the "
                              f"server were passed over; it may be faulty or hostile")

    def _enqueue(self, room: LocalRoom, message: Incoming) -> None:
        room.chain.addCallback(lambda _: self._try_show(room, message))
        room.chain.addErrback(self._event_failed, "MESSAGE")

    @defer.inlineCallbacks
    def _try_show(self, room: LocalRoom, message: Incoming):
        sender = yield self.identity_of(message.sender)
        if message not in room.pending:
            return
        if sender is None:
            self._settle(room, message, "verification_failed", "failed verification",
                         f"{message.sender}'s identity key is in doubt")
            return
        key = self.keys.key(room.name, message.epoch)
        if key is None:
            self._need_key(room, message)
            return
        header = MessageHeader(room.name, message.epoch, message.seq, message.message_id)
        try:
            envelope = open_sealed(key, sender, header, message.token, message.signature)
        except EnvelopeError as error:
            self._settle(room, message, "verification_failed", "failed verification",
                         error.reason)
            return
        room.pending.remove(message)
        if not self._remember(room, message):
            self._settle(room, message, "verification_failed", "was refused",
                         f"{message.sender} already sent seq {message.seq}: a replay")
            return
        if message.epoch == room.epoch:
            room.epoch_load += 1
        self.emit("message", room=room.name, server_seq=message.server_seq,
                  **{"from": message.sender}, text=envelope.body, time=envelope.timestamp,
                  epoch=message.epoch)
        self.save()

    def _remember(self, room: LocalRoom, message: Incoming) -> bool:
        """Record a verified message's (sender, seq); @return: False if that seq was
        already shown (a replay older than the remembered message ids).

        Per sender we keep the lowest and highest seq seen and the seqs between
        them still missing; a seq in that range that is not missing is a replay.
        """
        sender, seq = fold(message.sender), message.seq
        state = room.senders.get(sender)
        if not isinstance(state, dict):
            state = {"first": state, "last": state, "holes": []} if state else None
        if state is None:
            state = room.senders[sender] = {"first": seq, "last": seq, "holes": []}
        else:
            room.senders[sender] = state
            first, last, holes = state["first"], state["last"], state["holes"]
            if first <= seq <= last and seq not in holes:
                return False
            if seq in holes:
                holes.remove(seq)
            elif seq < first:
                self._add_holes(state, seq + 1, first)
                state["first"] = seq
            else:
                if seq > last + 1 and not any(fold(m.sender) == sender for m in room.pending):
                    missing = seq - last - 1
                    self.emit("gap", room=room.name, nick=message.sender, missing=missing,
                              message=f"{missing} message{'s' if missing > 1 else ''} from "
                                      f"{message.sender} missing")
                self._add_holes(state, last + 1, seq)
                state["last"] = seq
        room.seen.append(message.message_id.hex())
        del room.seen[:-SEEN_IDS_PER_ROOM]
        return True

    @staticmethod
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

    def _settle(self, room: LocalRoom, message: Incoming, kind: str, what: str,
                reason: str) -> None:
        """Give up on showing a message, and say why: never silence."""
        if message in room.pending:
            room.pending.remove(message)
        room.seen.append(message.message_id.hex())
        self.emit(kind, room=room.name, server_seq=message.server_seq, nick=message.sender,
                  message=f"message from {message.sender} {what}: {reason}", reason=reason)
        self.save()

    def _need_key(self, room: LocalRoom, message: Incoming) -> None:
        """A message waits for its key: find out whether it can come, and say so."""
        if not message.announced:
            message.announced = True
            self.emit("message_pending", room=room.name, server_seq=message.server_seq,
                      nick=message.sender, epoch=message.epoch,
                      message=f"message from {message.sender} waits for the key of epoch "
                              f"{message.epoch}")
        epochs = range(message.epoch, max(room.epoch, message.epoch) + 1)
        if all(self.keys.record(room.name, e) is not None for e in epochs):
            self._await_key(room, message.epoch)
            return
        self._fetch_epochs(room, message.epoch)

    def _fetch_epochs(self, room: LocalRoom, epoch: int) -> None:
        """Ask for the records from C{epoch} on, and our wraps with them (once
        at a time per epoch), then look at that epoch's key again."""
        d = self._epochs.run(f"{fold(room.name)}|{epoch}",
                             lambda: self.request("EPOCHS", room.name, str(epoch)))
        d.addCallback(lambda _: self._records_checked())
        d.addCallback(lambda _: self._await_key(room, epoch))
        d.addErrback(lambda f: f.trap(WireError, ConnectionLost))

    def _records_checked(self) -> defer.Deferred:
        """Fire once every epoch record received so far has been checked."""
        return defer.DeferredList(list(self._epoch_work), consumeErrors=True)

    def _await_key(self, room: LocalRoom, epoch: int) -> None:
        if self.keys.key(room.name, epoch) is not None:
            self._retry_pending(room)
        elif self.keys.record(room.name, epoch) is None:
            self._give_up(room, epoch, f"it names key epoch {epoch}, which the server does not "
                                       f"know; it was altered or misdirected")
        elif epoch >= room.epoch:
            self._check_key(room)
        elif room.history == "shared" and self.keys.key(room.name, room.epoch) is None:
            # The current key, once it arrives, unlocks the older ones.
            self._check_key(room)
        elif room.history == "shared":
            self._give_up(room, epoch, f"it was sent in key epoch {epoch}, before {room.name} "
                                       f"began sharing its history with newcomers")
        elif (fold(room.name), epoch) not in self._wraps_asked:
            # Our wrap may exist and its push never have come: another daemon
            # stored it while this one could not hear it. Ask once, then decide.
            self._wraps_asked.add((fold(room.name), epoch))
            self._fetch_epochs(room, epoch)
        else:
            self._give_up(room, epoch, f"it was sent in key epoch {epoch}, before you joined or "
                                       f"while you were not a member; you were never given "
                                       f"its key")

    def _give_up(self, room: LocalRoom, epoch: int, reason: str) -> None:
        for message in [m for m in room.pending if m.epoch == epoch]:
            self._settle(room, message, "undecryptable", "cannot be read", reason)

    def _retry_pending(self, room: LocalRoom) -> None:
        for message in sorted(room.pending, key=lambda m: m.server_seq):
            self._enqueue(room, message)

    @defer.inlineCallbacks
    def history(self, room_name: str, count: int):
        """The last C{count} messages of a room, decrypted where we can (for display)."""
        room = self._room(room_name)
        reply = yield self.request("HISTORY", room.name, "before", str(2**62), str(count),
                                   process=False)
        shown = []
        for _, args in reply.lines:
            sender = yield self.identity_of(args["sender"])
            key = self.keys.key(room.name, args["epoch"])
            header = MessageHeader(room.name, args["epoch"], args["seq"], args["message_id"])
            if sender is None or key is None:
                shown.append({"room": room.name, "from": args["sender"], "text": None,
                              "server_seq": args["server_seq"],
                              "reason": "no key for its epoch" if key is None else
                              "sender's key in doubt"})
                continue
            try:
                envelope = open_sealed(key, sender, header, args["token"], args["signature"])
            except EnvelopeError as error:
                shown.append({"room": room.name, "from": args["sender"], "text": None,
                              "server_seq": args["server_seq"], "reason": error.reason})
                continue
            shown.append({"room": room.name, "from": args["sender"], "text": envelope.body,
                          "server_seq": args["server_seq"], "time": envelope.timestamp})
        return shown

