# -*- test-case-name: tests.test_client_session -*-
"""The headless client: login, sync, keys, the outbox, and events for a UI.

A UI (the console, a bot, the batch runner, the benchmark load generator)
subscribes to L{ClientEvent}s and calls the command methods; it never sees
a line of the protocol. The session's promise to its user: every message
they are entitled to is shown; one that cannot be shown yet or ever comes
with a notice saying why; keys that are missing are fetched or requested
automatically, and waiting messages decrypt the moment their key arrives.
"""


from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from securechat.client.keyring import RoomKeyring
from securechat.client.keyservice import KeyService
from securechat.client.limits import ServerLimits
from securechat.client.membership import MembershipTrust
from securechat.client.outbox import Outbox
from securechat.client.pins import PinStore
from securechat.client.receiving import MessageReception
from securechat.client.sending import SendPath
from securechat.client.state import (
    ClientEvent,
    LocalRoom,
    ReportThrottle,
    SharedOperations,
    UnsentWraps,
)
from securechat.constants import PROTOCOL_NAME, PROTOCOL_VERSION
from securechat.crypto.identity import (
    PrivateIdentity,
    invite_signature,
    login_signature,
)
from securechat.crypto.roomkeys import (
    FIRST_EPOCH,
    EpochRecord,
    RoomKeyError,
    new_epoch,
)
from securechat.names import fold
from securechat.wire import Code, WireError, b64encode
from securechat.wire.limits import AnnouncedLimits

log = Logger()

KEY_PENDING_TEXT = "waiting for a room key from a member"


class ClientSession(MembershipTrust, MessageReception, SendPath, KeyService):
    """One user's view of one server, across reconnections.

    @param save: called with the state dict whenever it changed.
    @param channel_binding: the TLS exporter of a connection (see
        L{securechat.lineprotocol.tls_exporter}).
    @param share_with_verified_only: hand room keys only to members whose
        safety number the user has verified.
    """

    def __init__(self, identity: PrivateIdentity, nick: str, state: dict, clock, save,
                 channel_binding, share_with_verified_only: bool = False,
                 registration_token: str | None = None):
        self.identity = identity
        self.nick = state.get("nick", nick)
        self.clock = clock
        self._save_state = save
        self._binding = channel_binding
        self.verified_only = share_with_verified_only
        self.registration_token = registration_token
        self.registered = state.get("registered", False)
        self.pins = PinStore(state.get("pins"))
        self.keys = RoomKeyring(state.get("keyring"))
        self.rooms = {fold(r["name"]): LocalRoom.from_dict(r) for r in state.get("rooms", [])}
        self.outbox = Outbox(state.get("outbox"))
        # Rooms the user left while offline (folded name to reason): each PART
        # goes out after the next login, before anything else, and is kept
        # (and saved) until the server has taken it.
        self.parts_waiting: dict[str, tuple[str, str]] = {
            fold(name): (name, reason) for name, reason in state.get("parts_waiting", [])}
        self.limits = ServerLimits(state.get("server_limits"))
        self.protocol = None
        self.live = False
        self.failed_sends = 0
        self._subscribers = []
        self._queue: list = []
        self._drain_call = None
        self._pump_call = None
        # The cause of waiting messages the user was told of, until one is sent.
        self._waiting_told: str | None = None
        self._faults = ReportThrottle()
        self._save_call = None
        self._rotating = SharedOperations()
        self._fetching = SharedOperations()
        self._epochs = SharedOperations()
        # The latest epoch we made in each room, with the wraps we made for it
        # (folded nick to the identity fingerprint and the base64 wrap): a key
        # request that crossed one is answered with it, not with another epoch.
        self._own_wraps: dict[str, tuple[int, dict[str, tuple[bytes, str]]]] = {}
        # Older epochs whose wrap we asked the server for before giving up on them.
        self._wraps_asked: set[tuple[str, int]] = set()
        self._wait_calls: dict = {}
        self._early_wraps: dict[tuple[str, int], str] = {}
        self._held_records: dict[tuple[str, int], tuple] = {}
        self._refused_records: set[tuple[str, int]] = set()
        # Wraps of our own new epochs not yet acknowledged by the server, kept
        # (and saved) until they are: a connection cut between ROTATE and the
        # last WRAP must not leave members without the key they were given.
        self._unsent_wraps = {(fold(w["room"]), w["epoch"]): UnsentWraps.from_dict(w)
                              for w in state.get("unsent_wraps", [])}
        # EPOCH lines still being checked (their rotator's membership may need a WHO).
        self._epoch_work: set[defer.Deferred] = set()
        self._live_waiters: list[defer.Deferred] = []
        self._idle_waiters: list[defer.Deferred] = []

    # -- events ----------------------------------------------------------------

    def subscribe(self, callback) -> None:
        self._subscribers.append(callback)

    def emit(self, kind: str, **fields) -> None:
        event = ClientEvent(kind, fields)
        for callback in list(self._subscribers):
            callback(event)

    def state(self) -> dict:
        return {
            "nick": self.nick,
            "registered": self.registered,
            "pins": self.pins.to_dict(),
            "keyring": self.keys.to_dict(),
            "rooms": [r.to_dict() for r in self.rooms.values()],
            "outbox": self.outbox.to_list(),
            "unsent_wraps": [w.to_dict() for w in self._unsent_wraps.values()],
            "server_limits": self.limits.to_saved(),
            "parts_waiting": sorted(self.parts_waiting.values()),
        }

    def save(self) -> None:
        """Save soon; several changes in one turn are written once."""
        if self._save_call is None:
            self._save_call = self.clock.callLater(0, self.save_now)

    def save_now(self) -> None:
        self._save_call = None
        self._save_state(self.state())

    def when_live(self) -> defer.Deferred:
        if self.live:
            return defer.succeed(self)
        d = defer.Deferred()
        self._live_waiters.append(d)
        return d

    def when_idle(self) -> defer.Deferred:
        """Fire once every queued message has been acknowledged or has failed."""
        if not len(self.outbox):
            return defer.succeed(None)
        d = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def _room(self, name: str) -> LocalRoom:
        room = self.rooms.get(fold(name))
        if room is None:
            raise WireError(Code.NOT_MEMBER, f"you are not in {name}; /join it first")
        return room

    # -- connection ------------------------------------------------------------

    def connection_made(self, protocol) -> None:
        self.protocol = protocol

    def connection_lost(self, protocol, reason) -> None:
        if protocol is not self.protocol:
            return
        self.protocol = None
        self.live = False
        self.limits.stop()
        queued, self._queue = self._queue, []
        for _, _, _, d in queued:
            d.errback(ConnectionLost("disconnected before sending"))
        if self._drain_call is not None:
            self._drain_call.cancel()
        self._drain_call = None
        self.outbox.connection_lost()
        for call in self._wait_calls.values():
            call.cancel()
        self._wait_calls.clear()
        for room in self.rooms.values():
            room.key_requested = False
        self.emit("disconnected", reason=reason.getErrorMessage())

    def server_fault(self, text: str) -> None:
        self.emit("error", code="PROTOCOL", message=text)

    def server_error(self, code: str, text: str) -> None:
        self.emit("error", code=code, message=text, unprompted=True)

    def _fatal(self, code: str, text: str) -> None:
        self.emit("fatal", code=code, message=text)
        if self.protocol is not None:
            self.protocol.transport.loseConnection()

    # -- requests, paced ---------------------------------------------------------

    def request(self, verb: str, *args: str, process: bool = True) -> defer.Deferred:
        """Send a request within the server's rate limit; fire with its Reply."""
        if self.protocol is None:
            return defer.fail(ConnectionLost("not connected"))
        if not self.limits.pacing:
            return self.protocol.request(verb, *args, process=process)
        d = defer.Deferred()
        self._queue.append((verb, args, process, d))
        self._drain_requests()
        return d

    def _drain_requests(self) -> None:
        now = self.clock.seconds()
        while self._queue and self.limits.take_line(now):
            verb, args, process, d = self._queue.pop(0)
            self.protocol.request(verb, *args, process=process).chainDeferred(d)
        if self._queue and self._drain_call is None:
            self._drain_call = self.clock.callLater(self.limits.line_delay(now),
                                                    self._drain_timer)

    def _drain_timer(self) -> None:
        self._drain_call = None
        self._drain_requests()

    @defer.inlineCallbacks
    def paged(self, verb: str, *args: str):
        """Every data line of a request the server answers a page at a time (WHO,
        LIST): asked again after the key its OK names, until one names none. A
        server that names the same key again cannot keep us asking."""
        lines, after = [], None
        while True:
            reply = yield self.request(verb, *args, *([after] if after else []), process=False)
            lines.extend(reply.lines)
            following = reply.final[1].get("b")
            if not following or following == after:
                return lines
            after = following

    # -- login and sync ---------------------------------------------------------

    def server_event(self, verb: str, args: dict) -> None:
        handler = getattr(self, "_on_" + verb.lower(), None)
        if handler is None:
            log.warn("no handling for server line {verb}", verb=verb)
            return
        result = handler(**args)
        if isinstance(result, defer.Deferred):
            result.addErrback(self._event_failed, verb)
            if verb == "EPOCH":
                self._epoch_work.add(result)
                result.addBoth(lambda r, d=result: (self._epoch_work.discard(d), r)[1])

    def _event_failed(self, failure, verb: str) -> None:
        if failure.check(ConnectionLost):
            return
        log.failure("handling {verb} from the server", failure, verb=verb)
        self.emit("error", code="CLIENT", message=f"could not handle {verb}: {failure.getErrorMessage()}")

    @defer.inlineCallbacks
    def _on_hello(self, protocol, version, server, nonce, text):
        if protocol != PROTOCOL_NAME or version != PROTOCOL_VERSION:
            self._fatal("PROTOCOL", f"the server speaks {protocol} {version}, not "
                                    f"{PROTOCOL_NAME} {PROTOCOL_VERSION}")
            return
        self.server_name = server
        signature = b64encode(login_signature(self.identity, server, self.nick, nonce,
                                              self._binding(self.protocol.transport)))
        public = self.identity.public
        try:
            if self.registered:
                reply = yield self.request("LOGIN", self.nick, signature)
            else:
                reply = yield self.request(
                    "REGISTER", self.nick, b64encode(public.sign_der), b64encode(public.enc_der),
                    b64encode(public.enc_signature), signature,
                    *([self.registration_token] if self.registration_token else []),
                )
                self.registered = True
                self.save()
        except WireError as error:
            self._fatal(error.code, error.text)
            return
        announced = [args["limits"] for verb, args in reply.lines if verb == "LIMITS"]
        if not announced:
            self._fatal("PROTOCOL", "the server announced no limits at login; it is older "
                                    "than this client: ask its operator to upgrade it")
            return
        try:
            self.limits.start(AnnouncedLimits.parse(announced[-1]), self.clock.seconds())
        except WireError as error:
            self._fatal("PROTOCOL", f"the server's limits cannot be read: {error.text}")
            return
        self.save()
        self.emit("connected", nick=self.nick, server=server)
        yield self._send_waiting_parts()
        yield self._sync()

    @defer.inlineCallbacks
    def _send_waiting_parts(self):
        """The rooms left while offline, left now, before SYNC lists them again."""
        for key, (name, reason) in list(self.parts_waiting.items()):
            try:
                yield self.request("PART", name, *([reason] if reason else []))
            except WireError as error:
                if error.code not in (Code.NOT_MEMBER, Code.NO_SUCH_ROOM):
                    self.emit("error", code=str(error.code),
                              message=f"could not leave {name}: {error.text}; trying again "
                                      f"after the next reconnection")
                    continue
            del self.parts_waiting[key]
            self.save()

    @defer.inlineCallbacks
    def _sync(self):
        known = set(self.rooms)
        positions = " ".join(f"{r.name}={r.position()}" for r in self.rooms.values())
        reply = yield self.request("SYNC", positions)
        listed = {fold(args["room"]) for verb, args in reply.lines
                  if verb == "ROOM" and fold(args["room"]) not in self.parts_waiting}
        for gone in known - listed:
            self.emit("left", room=self.rooms[gone].name, how="removed while offline", by="",
                      reason="")
            self._drop_room(gone)
        for verb, args in reply.lines:
            if verb == "MORE":
                yield self._catch_up(args["room"], args["after"])
        for room in list(self.rooms.values()):
            self._check_key(room)
        self._resume_wraps()
        self.live = True
        waiters, self._live_waiters = self._live_waiters, []
        for waiter in waiters:
            waiter.callback(self)
        self.emit("synced", rooms=sorted(r.name for r in self.rooms.values()))
        self._pump()

    @defer.inlineCallbacks
    def _catch_up(self, room: str, after: int):
        """Page through a room's messages after C{after}, each page shown as it
        comes; over when a page brings nothing new (a server that repeats a
        page, or sends only lines we cannot read, cannot keep us asking)."""
        while True:
            reply = yield self.request("HISTORY", room, "after", str(after), "500")
            seqs = [args["server_seq"] for verb, args in reply.lines if verb == "MESSAGE"]
            seqs += [u.fields["server_seq"] for u in reply.unreadable if "server_seq" in u.fields]
            if not seqs or max(seqs) <= after:
                return
            after = max(seqs)

    # -- room state lines --------------------------------------------------------

    def _on_room(self, room, role, epoch, last_seq, flags, members, topic):
        if fold(room) in self.parts_waiting:
            return
        local = self.rooms.setdefault(fold(room), LocalRoom(room))
        local.name, local.role, local.epoch = room, role, max(local.epoch, epoch)
        local.flags = set(flags.split(","))
        local.invite_only = local.invite_only or "invite_only" in local.flags
        local.history = "shared" if "shared" in local.flags else "joined"
        local.members, local.topic = members, topic

    def _on_joined(self, room, nick, role):
        if fold(nick) != fold(self.nick) and fold(room) in self.rooms:
            self.rooms[fold(room)].members += 1
            self.emit("member_joined", room=room, nick=nick, role=role)

    def _on_parted(self, room, nick, how, by, reason):
        if fold(room) not in self.rooms:
            return
        if fold(nick) == fold(self.nick):
            self.emit("left", room=room, how=how, by=by, reason=reason)
            self._drop_room(fold(room))
        else:
            self.rooms[fold(room)].members -= 1
            self.rooms[fold(room)].vouched.discard(fold(nick))
            self.emit("member_left", room=room, nick=nick, how=how, by=by, reason=reason)

    def _drop_room(self, key: str) -> None:
        room = self.rooms.pop(key, None)
        if room is None:
            return
        for entry in self.outbox.drop_room(room.name):
            self._send_failed(entry, "NOT_MEMBER", f"you are no longer in {room.name}")
        self.save()

    def _on_topic(self, room, by, topic):
        if fold(room) in self.rooms:
            self.rooms[fold(room)].topic = topic
        self.emit("topic", room=room, by=by, topic=topic)

    def _on_role(self, room, nick, role, by):
        if fold(nick) == fold(self.nick) and fold(room) in self.rooms:
            self.rooms[fold(room)].role = role
        self.emit("role", room=room, nick=nick, role=role, by=by)

    def _on_settings(self, room, by, flags):
        if fold(room) in self.rooms:
            local = self.rooms[fold(room)]
            local.flags = set(flags.split(","))
            local.invite_only = local.invite_only or "invite_only" in local.flags
        self.emit("settings", room=room, by=by, flags=flags)

    def _on_invited(self, room, by):
        self.emit("invited", room=room, by=by)

    def _on_deleted(self, room, by):
        self.emit("room_deleted", room=room, by=by)
        self._drop_room(fold(room))

    def _on_more(self, room, after):
        """Handled by the sync that asked; nothing to do as an event."""

    def _on_limits(self, limits):
        """Read by the login that asked for it (L{_on_hello})."""

    # -- keys --------------------------------------------------------------------

    @defer.inlineCallbacks
    def _on_epoch(self, room, epoch, rotator, record, signature):
        identity = yield self.identity_of(rotator)
        local = self.rooms.get(fold(room))
        if identity is None:
            self.emit("verification_failed", room=room, nick=rotator,
                      reason=f"cannot check the epoch {epoch} record: {rotator}'s key is in doubt")
            return
        if local is None or self.keys.record(room, epoch) is not None:
            return
        if fold(rotator) not in local.vouched:
            members = yield self._members(local)
            if fold(rotator) not in local.vouched:
                if epoch < local.epoch:
                    # An older record may still be vouched for by the chain of a
                    # newer one from a trusted rotator.
                    self._held_records[(fold(room), epoch)] = (record, signature, rotator,
                                                               identity)
                    return
                self._refused_records.add((fold(room), epoch))
                self.emit("verification_failed", room=room, nick=rotator,
                          reason=f"epoch {epoch} of {room} was made by {rotator}, whom you "
                                 f"have no reason to trust as a member; its key is refused")
                return
        else:
            members = None
        self._accept_record(local, epoch, record, signature, rotator, identity, members)
        if members is None and epoch >= local.epoch:
            members = yield self._members(local)
        if members is not None:
            self._vouch_member_set(local, epoch, members)


    def _accept_record(self, local: LocalRoom, epoch, record, signature, rotator, identity,
                       members) -> None:
        room = local.name
        known = self.keys.record(room, epoch) is not None
        had_key = self.keys.key(room, epoch) is not None
        try:
            accepted = self.keys.add_record(room, epoch, record, signature, rotator, identity)
        except RoomKeyError as error:
            self.emit("verification_failed", room=room, nick=rotator, reason=str(error))
            return
        self.save()
        if not had_key and self.keys.key(room, epoch) is not None:
            self.emit("key_received", room=room, epoch=epoch,
                      by=self._early_wraps.pop((fold(room), epoch), rotator))
        if epoch > local.epoch:
            local.epoch = epoch
            local.epoch_load = 0
            local.key_requested = False
        if epoch >= local.epoch:
            local.history = accepted.history
        if not known and fold(rotator) != fold(self.nick):
            self.emit("rotation", room=room, epoch=epoch, by=rotator, reason=accepted.reason)
        held = self._held_records.pop((fold(room), epoch - 1), None)
        if held is not None and EpochRecord.decode(held[0]).hash() == accepted.prev_hash:
            self._accept_record(local, epoch - 1, *held, members)
        self._retry_pending(local)

    def _on_key(self, room, epoch, wrapper, wrap):
        if self.keys.key(room, epoch) is not None:
            return None
        try:
            usable = self.keys.add_wrap(self.identity, room, epoch, wrap)
        except RoomKeyError as error:
            self.emit("verification_failed", room=room, nick=wrapper, reason=str(error))
            return None
        self.save()
        local = self.rooms.get(fold(room))
        if not usable:
            self._early_wraps[(fold(room), epoch)] = wrapper
            if local is None or (fold(room), epoch) in self._refused_records:
                return None
            return self.request("EPOCHS", room, str(epoch))
        self.emit("key_received", room=room, epoch=epoch, by=wrapper)
        if local is not None:
            local.key_requested = False
            local.key_wait_since = None
            self._retry_pending(local)
            self._pump()
        return None

    def _on_pending(self, room, epoch):
        local = self.rooms.get(fold(room))
        if local is not None:
            if local.announced_pending == epoch:
                return
            local.announced_pending = epoch
        self.emit("key_pending", room=room, epoch=epoch, message=KEY_PENDING_TEXT)

    def _on_withheld(self, room, epoch, by, code, text):
        self.emit("key_withheld", room=room, epoch=epoch, by=by, code=code,
                  message=f"{by} will not share the key of {room}: {text or code}")

    def _check_key(self, room: LocalRoom) -> None:
        """Ask for the current key if we lack it (once per connection)."""
        if room.epoch < FIRST_EPOCH or self.keys.key(room.name, room.epoch) is not None:
            return
        if room.key_requested or self.protocol is None:
            return
        room.key_requested = True
        if room.key_wait_since is None:
            room.key_wait_since = self.clock.seconds()
        d = self.request("KEYREQ", room.name)
        d.addErrback(self._key_request_failed, room)

    def _key_request_failed(self, failure, room: LocalRoom) -> None:
        room.key_requested = False
        failure.trap(WireError, ConnectionLost)

    def rotate(self, room_name: str, reason: str = "requested",
               history: str | None = None) -> defer.Deferred:
        """Publish a new epoch for C{room_name}; concurrent calls share one rotation.

        @param history: a new history policy ("joined" or "shared"); changing
            it is itself a reason to rotate.
        """
        room = self._room(room_name)
        d = self._rotating.run(fold(room.name), lambda: self._rotate(room, reason, history))
        return d.addBoth(self._rotation_over)

    def _rotation_over(self, result):
        self._pump()
        return result

    @defer.inlineCallbacks
    def _rotate(self, room: LocalRoom, reason: str, history: str | None):
        if room.epoch >= FIRST_EPOCH and self.keys.record(room.name, room.epoch) is None:
            yield self.request("EPOCHS", room.name, str(room.epoch))
        members = yield self._members(room)
        included = [m["identity"] for n, m in sorted(members.items())
                    if self._refusal(room, members, m["nick"]) is None]
        if self.identity.public not in included:
            included.append(self.identity.public)
        epoch = room.epoch + 1
        previous = self.keys.record(room.name, room.epoch)
        key, record, signature, wraps = new_epoch(
            self.identity, room.name, epoch, previous.record if previous else None,
            self.keys.key(room.name, room.epoch), included, reason, history or room.history,
            int(self.clock.seconds()),
        )
        given = {
            member["nick"]: (member["identity"].fingerprint,
                             b64encode(wraps[member["identity"].fingerprint]))
            for member in members.values()
            if member["identity"] is not None and member["identity"] in included
            and fold(member["nick"]) != fold(self.nick)
        }
        unsent = UnsentWraps(room.name, epoch, key, {n: w for n, (_, w) in given.items()})
        self._unsent_wraps[(fold(room.name), epoch)] = unsent
        self._own_wraps[fold(room.name)] = (epoch, {fold(n): g for n, g in given.items()})
        self.save()
        try:
            yield self.request("ROTATE", room.name, str(epoch), b64encode(record.encode()),
                               b64encode(signature), b64encode(wraps[self.identity.fingerprint]))
        except WireError as error:
            self._unsent_wraps.pop((fold(room.name), epoch), None)
            if error.code != Code.EPOCH_CONFLICT:
                raise
            # Someone else rotated first: adopt their epoch instead.
            yield self.request("EPOCHS", room.name, str(epoch))
            self._check_key(room)
            return room.epoch
        self.keys.add_record(room.name, epoch, record.encode(), signature, self.nick,
                             self.identity.public)
        self.keys.add_own_key(room.name, epoch, key)
        room.epoch, room.history, room.key_requested = epoch, record.history, False
        room.epoch_load = 0
        room.vouched.update(fold(m["nick"]) for m in members.values()
                            if m["identity"] is not None and m["identity"] in included)
        room.flags.discard("rekey")
        self.save()
        self.emit("rotated", room=room.name, epoch=epoch, reason=reason,
                  members=len(included))
        self._send_wraps(unsent)
        return epoch

    def _resume_wraps(self) -> None:
        """After a reconnect: finish handing out the keys of our epochs that the
        server stored, and forget those it never took (the ROTATE was lost)."""
        for unsent in list(self._unsent_wraps.values()):
            if self.keys.key(unsent.room, unsent.epoch) == unsent.key \
                    and fold(unsent.room) in self.rooms:
                self._send_wraps(unsent)
            else:
                del self._unsent_wraps[(fold(unsent.room), unsent.epoch)]
                self.save()

    def _send_wraps(self, unsent: UnsentWraps) -> None:
        for nick, wrapped in list(unsent.wraps.items()):
            d = self.request("WRAP", unsent.room, str(unsent.epoch), nick, wrapped)
            d.addCallbacks(self._wrap_done, self._wrap_failed, (unsent, nick), None,
                           (unsent, nick))
        if not unsent.wraps:
            self._wrap_done(None, unsent, None)

    def _wrap_done(self, _, unsent: UnsentWraps, nick: str | None) -> None:
        unsent.wraps.pop(nick, None)
        if not unsent.wraps:
            self._unsent_wraps.pop((fold(unsent.room), unsent.epoch), None)
        self.save()

    def _wrap_failed(self, failure, unsent: UnsentWraps, nick: str) -> None:
        if failure.check(ConnectionLost):
            return
        failure.trap(WireError)
        self._wrap_done(None, unsent, nick)
        self.emit("error", code=str(failure.value.code),
                  message=f"could not hand {nick} the key of {unsent.room}: "
                          f"{failure.getErrorMessage()}")

    # -- receiving messages ---------------------------------------------------------


    # -- commands ------------------------------------------------------------------

    @defer.inlineCallbacks
    def join(self, name: str, password: str | None = None):
        """Join (or create) a room. In a shared-history room a newcomer reads
        from the beginning; otherwise from the moment they joined."""
        new = fold(name) not in self.rooms
        reply = yield self.request("JOIN", name, *([password] if password else []))
        state = dict(reply.lines)["ROOM"]
        room = self.rooms[fold(state["room"])]
        if new and room.history != "shared":
            room.last_seq = state["last_seq"]
        self.save()
        self.emit("joined", room=room.name, role=room.role, epoch=room.epoch,
                  history=room.history, topic=room.topic)
        if new:
            yield self._members(room)
        self._check_key(room)
        if new and room.history == "shared":
            yield self._catch_up(room.name, 0)
        return room

    @defer.inlineCallbacks
    def part(self, name: str, reason: str | None = None):
        """Leave a room; while offline, the room is left here at once and the
        PART goes out after the next login, like a message."""
        room = self._room(name)
        if not self.live:
            self.parts_waiting[fold(room.name)] = (room.name, reason or "")
            self._drop_room(fold(room.name))
            self.emit("left", room=room.name, how="part", by="",
                      reason="the server is told once reconnected")
            return
        yield self.request("PART", room.name, *([reason] if reason else []))
        self._drop_room(fold(name))


    @defer.inlineCallbacks
    def measure_lag(self):
        """Seconds for a PING to come back from the server."""
        started = self.clock.seconds()
        yield self.request("PING")
        return self.clock.seconds() - started

    def configure(self, room: str, setting: str, value: str | None) -> defer.Deferred:
        return self.request("SET", self._room(room).name, setting, *([value] if value else []))

    def set_topic(self, room: str, topic: str) -> defer.Deferred:
        return self.request("TOPIC", self._room(room).name, topic)

    @defer.inlineCallbacks
    def invite(self, room_name: str, nick: str):
        room = self._room(room_name)
        invitee = yield self.identity_of(nick)
        if invitee is None or self.pins.has_change(nick):
            raise WireError(Code.BAD_KEY, f"{nick}'s identity is in doubt; /verify {nick} first")
        signature = invite_signature(self.identity, room.name, nick, invitee)
        yield self.request("INVITE", room.name, nick, b64encode(signature))

    def kick(self, room: str, nick: str, reason: str | None = None, ban: bool = False):
        return self.request("BAN" if ban else "KICK", self._room(room).name, nick,
                            *([reason] if reason else []))

    def unban(self, room: str, nick: str):
        return self.request("UNBAN", self._room(room).name, nick)

    @defer.inlineCallbacks
    def who(self, room_name: str):
        members = yield self._members(self._room(room_name))
        return [{"nick": m["nick"], "role": m["role"], "online": bool(m["online"]),
                 "verified": self.pins.verified(m["nick"]),
                 "identity_changed": self.pins.has_change(m["nick"])}
                for m in members.values()]

    @defer.inlineCallbacks
    def list_rooms(self):
        lines = yield self.paged("LIST")
        return [{"room": a["room"], "members": a["members"], "topic": a["topic"]}
                for _, a in lines]


    # -- sending -------------------------------------------------------------------


