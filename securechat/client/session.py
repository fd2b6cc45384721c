# -*- test-case-name: tests.test_client_session -*-
"""The headless client: login, sync, keys, the outbox, and events for a UI.

A UI (the console, a bot, the batch runner, the benchmark load generator)
subscribes to L{ClientEvent}s and calls the command methods; it never sees
a line of the protocol. The session's promise to its user: every message
they are entitled to is shown; one that cannot be shown yet or ever comes
with a notice saying why; keys that are missing are fetched or requested
automatically, and waiting messages decrypt the moment their key arrives.
"""

import json
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from securechat.constants import PROTOCOL_NAME, PROTOCOL_VERSION, ROTATE_AFTER_MESSAGES
from securechat.client.keyring import RoomKeyring
from securechat.client.outbox import Outbox, OutboxEntry
from securechat.client.pins import CHANGED, HELD, NEW, PinStore
from securechat.crypto.envelope import EnvelopeError, MessageHeader, open_sealed, seal
from securechat.crypto.identity import (
    IdentityError,
    PrivateIdentity,
    PublicIdentity,
    format_safety_number,
    invite_signature,
    login_signature,
    safety_number,
    verify_invite,
)
from securechat.crypto.roomkeys import (
    FIRST_EPOCH,
    EpochRecord,
    RoomKeyError,
    member_set_hash,
    new_epoch,
    wrap_key,
)
from securechat.names import fold
from securechat.ratelimit import TokenBucket
from securechat.wire import Code, WireError, b64encode

log = Logger()

# Messages on the wire at once, unacknowledged; enough to keep a fast link
# busy, few enough that a rotation re-seals little.
SEND_WINDOW = 100

# Message ids remembered per room to drop replays; older ones have long
# left the server's retry window.
SEEN_IDS_PER_ROOM = 2000

# Sequence numbers remembered per sender as not yet seen below the highest
# one seen: a late message may fill one; anything else at or below is a replay.
MAX_HOLES_PER_SENDER = 1000

# Head-room kept below the server's announced flood limits.
PACING_MARGIN = 0.9

KEY_PENDING_TEXT = "waiting for a room key from a member"

# Wait before resending a message the server could not take for a passing
# reason (its flood limit, an internal error).
RETRY_SECONDS = 2.0

# A newcomer who wants to send in a room whose key has not reached them
# yet waits this long for a key holder to answer before making a new key
# itself: long enough for an online holder, short enough to feel prompt.
KEY_WAIT_SECONDS = 5.0


class SharedOperations:
    """At most one run of each keyed operation at a time; everyone who asks
    while it runs gets its result (a rotation, a key fetch)."""

    def __init__(self):
        self._waiters: dict[str, list[defer.Deferred]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._waiters

    def run(self, key: str, start) -> defer.Deferred:
        waiter = defer.Deferred()
        if key in self._waiters:
            self._waiters[key].append(waiter)
            return waiter
        self._waiters[key] = [waiter]
        defer.maybeDeferred(start).addBoth(self._done, key)
        return waiter

    def _done(self, result, key: str) -> None:
        for waiter in self._waiters.pop(key):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


@dataclass
class ClientEvent:
    """Something a UI shows: a message, a notice, a change of state."""

    kind: str
    fields: dict

    def to_json(self) -> str:
        return json.dumps({"event": self.kind, **self.fields}, ensure_ascii=False)


@dataclass
class Incoming:
    """A MESSAGE line, kept until it can be shown."""

    room: str
    server_seq: int
    sender: str
    epoch: int
    seq: int
    message_id: bytes
    token: bytes
    signature: bytes
    received_ms: int


@dataclass
class LocalRoom:
    name: str
    role: str = "member"
    epoch: int = 0
    history: str = "joined"
    flags: set = field(default_factory=set)
    topic: str = ""
    members: int = 0
    last_seq: int = 0
    next_seq: int = 1
    senders: dict = field(default_factory=dict)
    seen: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    key_requested: bool = False
    key_wait_since: float | None = None
    announced_pending: int = 0
    # Messages we know the current epoch carried: the server demands a new
    # key after ROTATE_AFTER_MESSAGES, and rotating first wastes no sends.
    epoch_load: int = 0
    # Members we trust to be in the room: seen while it was open, given a key
    # by us, invited by a trusted op, or in a member set a trusted rotator
    # signed. Only they receive keys from us, and only their epochs count.
    vouched: set = field(default_factory=set)
    # Once seen invite-only, always treated so: the flag comes from the server.
    invite_only: bool = False
    # The roster first seen after joining is trusted, as keys are on first use.
    roster_pinned: bool = False
    # Messages are handled one after another, so a sender whose key must be
    # fetched first does not let later messages overtake theirs.
    chain: defer.Deferred = field(default_factory=lambda: defer.succeed(None))

    def to_dict(self) -> dict:
        return {"name": self.name, "last_seq": self.position(), "next_seq": self.next_seq,
                "senders": self.senders, "seen": self.seen[-SEEN_IDS_PER_ROOM:],
                "vouched": sorted(self.vouched), "invite_only": self.invite_only,
                "roster_pinned": self.roster_pinned}

    @classmethod
    def from_dict(cls, data: dict) -> "LocalRoom":
        return cls(data["name"], last_seq=data["last_seq"], next_seq=data["next_seq"],
                   senders=data["senders"], seen=data["seen"],
                   vouched=set(data.get("vouched", ())),
                   invite_only=data.get("invite_only", False),
                   roster_pinned=data.get("roster_pinned", False))

    def position(self) -> int:
        """The seq to resume from: nothing at or below it still needs showing."""
        waiting = [m.server_seq for m in self.pending]
        return min(waiting) - 1 if waiting else self.last_seq


class ClientSession:
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
        self.protocol = None
        self.live = False
        self.failed_sends = 0
        self._subscribers = []
        self._bucket = None
        self._queue: list = []
        self._drain_call = None
        self._save_call = None
        self._rotating = SharedOperations()
        self._fetching = SharedOperations()
        self._epochs = SharedOperations()
        self._wait_calls: dict = {}
        self._early_wraps: dict[tuple[str, int], str] = {}
        self._held_records: dict[tuple[str, int], tuple] = {}
        self._refused_records: set[tuple[str, int]] = set()
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
        self._bucket = None
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
        self.emit("error", code=code, message=text)

    def _fatal(self, code: str, text: str) -> None:
        self.emit("fatal", code=code, message=text)
        if self.protocol is not None:
            self.protocol.transport.loseConnection()

    # -- requests, paced ---------------------------------------------------------

    def request(self, verb: str, *args: str, process: bool = True) -> defer.Deferred:
        """Send a request within the server's rate limit; fire with its Reply."""
        if self.protocol is None:
            return defer.fail(ConnectionLost("not connected"))
        if self._bucket is None:
            return self.protocol.request(verb, *args, process=process)
        d = defer.Deferred()
        self._queue.append((verb, args, process, d))
        self._drain_requests()
        return d

    def _drain_requests(self) -> None:
        now = self.clock.seconds()
        while self._queue and self._bucket.take(now):
            verb, args, process, d = self._queue.pop(0)
            self.protocol.request(verb, *args, process=process).chainDeferred(d)
        if self._queue and self._drain_call is None:
            self._drain_call = self.clock.callLater(self._bucket.delay(now), self._drain_timer)

    def _drain_timer(self) -> None:
        self._drain_call = None
        self._drain_requests()

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
        # OK <nick> <lines per second> <burst>: pace a little below both.
        limits = reply.final[1]
        self._bucket = TokenBucket(float(limits["b"]) * PACING_MARGIN,
                                   max(1.0, float(limits["c"]) * PACING_MARGIN - 4),
                                   self.clock.seconds())
        self.emit("connected", nick=self.nick, server=server)
        yield self._sync()

    @defer.inlineCallbacks
    def _sync(self):
        known = set(self.rooms)
        positions = " ".join(f"{r.name}={r.position()}" for r in self.rooms.values())
        reply = yield self.request("SYNC", positions)
        listed = {fold(args["room"]) for verb, args in reply.lines if verb == "ROOM"}
        for gone in known - listed:
            self.emit("left", room=self.rooms[gone].name, how="removed while offline", by="",
                      reason="")
            self._drop_room(gone)
        for verb, args in reply.lines:
            if verb == "MORE":
                yield self._catch_up(args["room"], args["after"])
        for room in list(self.rooms.values()):
            self._check_key(room)
        self.live = True
        waiters, self._live_waiters = self._live_waiters, []
        for waiter in waiters:
            waiter.callback(self)
        self.emit("synced", rooms=sorted(r.name for r in self.rooms.values()))
        self._pump()

    @defer.inlineCallbacks
    def _catch_up(self, room: str, after: int):
        while True:
            reply = yield self.request("HISTORY", room, "after", str(after), "500")
            if not reply.lines:
                return
            after = reply.lines[-1][1]["server_seq"]

    # -- room state lines --------------------------------------------------------

    def _on_room(self, room, role, epoch, last_seq, flags, members, topic):
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

    # -- identities --------------------------------------------------------------

    def identity_of(self, nick: str) -> defer.Deferred:
        """The pinned identity of C{nick}, fetching and pinning it on first sight."""
        pinned = self.pins.pinned(nick)
        if pinned is not None:
            return defer.succeed(pinned)

        def fetch():
            d = self.request("USERKEYS", nick, process=False)
            return d.addCallback(lambda reply: self._observe(nick, reply.lines[0][1]))

        return self._fetching.run(fold(nick), fetch)

    def _observe(self, nick: str, keys: dict) -> PublicIdentity | None:
        """Pin or compare an identity the server presented; @return: it if usable."""
        try:
            identity = PublicIdentity.from_wire(keys["sign_key"], keys["enc_key"],
                                                keys["enc_signature"])
        except IdentityError as error:
            self.emit("verification_failed", nick=nick, reason=f"unusable keys: {error}")
            return None
        status = self.pins.observe(nick, identity)
        if status == NEW:
            self.save()
        elif status == HELD:
            return None
        elif status == CHANGED:
            self.save()
            self.emit("identity_changed", nick=nick,
                      message=f"{nick}'s identity key changed. Until you accept it with "
                              f"/accept {nick}, you send them no keys and their new "
                              f"signatures are not trusted; compare safety numbers first.")
            return None
        return self.pins.usable(nick)

    def verify(self, nick: str) -> defer.Deferred:
        d = self.identity_of(nick)

        def show(identity):
            if identity is None:
                raise WireError(Code.NO_SUCH_USER, f"no usable identity for {nick}")
            number = safety_number(self.identity.public, self.nick, identity, nick)
            self.emit("safety_number", nick=nick, number=format_safety_number(number),
                      changed=self.pins.has_change(nick))
            return number

        return d.addCallback(show)

    def accept(self, nick: str) -> bool:
        accepted = self.pins.accept_change(nick)
        self.save()
        self.emit("identity_accepted" if accepted else "notice", nick=nick,
                  message=f"now trusting {nick}'s new key" if accepted
                  else f"{nick}'s key has not changed")
        return accepted

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

    def _vouch_member_set(self, room: LocalRoom, epoch: int, members: dict) -> None:
        """A trusted rotator signed the member set of this epoch: if it is the set
        the server shows now, all of them are members we may trust."""
        signed = self.keys.record(room.name, epoch)
        present = [m for m in members.values() if m["identity"] is not None]
        if signed and member_set_hash(m["identity"].fingerprint for m in present) \
                == signed.record.members:
            room.vouched.update(fold(m["nick"]) for m in present)

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

    def _on_wrapreq(self, room, epoch, nick):
        # Our own keys arrive with the login sync; serve once we hold them.
        return self.when_live().addCallback(lambda _: self._serve_request(room, epoch, nick))

    @defer.inlineCallbacks
    def _serve_request(self, room_name: str, epoch: int, nick: str):
        room = self.rooms.get(fold(room_name))
        if room is None or epoch != room.epoch:
            # Only the current key is ever handed out; a request for another
            # epoch is stale or forged, and is left to expire.
            return
        key = self.keys.key(room_name, epoch)
        if key is None:
            yield self.request("WITHHOLD", room_name, str(epoch), nick, "unavailable",
                               "this member's client no longer holds the key")
            return
        members = yield self._members(room)
        refusal = self._refusal(room, members, nick)
        if refusal is not None:
            code, text = refusal
            self.emit("key_withheld_by_me", room=room.name, nick=nick, code=code, message=text)
            yield self.request("WITHHOLD", room.name, str(epoch), nick, code, text)
            return
        if room.history == "joined":
            # Handing over this epoch's key would show the newcomer what was
            # said before they joined; a new epoch that includes them does not.
            yield self.rotate(room.name, f"{nick} joined")
            return
        wrapped = wrap_key(key, members[fold(nick)]["identity"], room.name, epoch)
        yield self.request("WRAP", room.name, str(epoch), nick, b64encode(wrapped))
        room.vouched.add(fold(nick))
        self.save()
        self.emit("key_shared", room=room.name, nick=nick, epoch=epoch)

    @defer.inlineCallbacks
    def _members(self, room: LocalRoom):
        """WHO, with each member's identity checked against our pins."""
        reply = yield self.request("WHO", room.name, process=False)
        members = {}
        for _, args in reply.lines:
            identity = self._observe(args["nick"], args)
            members[fold(args["nick"])] = {**args, "identity": identity}
        self._vouch(room, members)
        return members

    def _vouch(self, room: LocalRoom, members: dict) -> None:
        """Extend the vouched set from what we can check ourselves."""
        room.vouched.add(fold(self.nick))
        if not room.invite_only or not room.roster_pinned:
            room.vouched.update(members)
            room.roster_pinned = True
            return
        own = members.get(fold(self.nick))
        if own is not None and own.get("inviter"):
            inviter = members.get(fold(own["inviter"]))
            if inviter is not None and self._invite_valid(room, inviter, own):
                room.vouched.add(fold(own["inviter"]))
        changed = True
        while changed:
            changed = False
            for key, member in members.items():
                if key in room.vouched or not member.get("inviter"):
                    continue
                inviter = members.get(fold(member["inviter"]))
                if (inviter is not None and fold(member["inviter"]) in room.vouched
                        and inviter["role"] in ("op", "owner")
                        and self._invite_valid(room, inviter, member)):
                    room.vouched.add(key)
                    changed = True

    @staticmethod
    def _invite_valid(room: LocalRoom, inviter: dict, member: dict) -> bool:
        return (inviter["identity"] is not None and member["identity"] is not None
                and verify_invite(inviter["identity"], member["invite_signature"] or b"",
                                  room.name, member["nick"], member["identity"]))

    def _refusal(self, room: LocalRoom, members: dict, nick: str):
        """Why we must not give C{nick} the key of C{room}, or None."""
        member = members.get(fold(nick))
        if member is None:
            return "not_member", f"{nick} is not in {room.name}"
        if member["identity"] is None:
            return "identity_changed", f"{nick}'s identity key changed and is not accepted yet"
        if room.invite_only and fold(nick) not in room.vouched:
            return "not_invited", f"{nick} has no valid invite signed by a trusted op of {room.name}"
        if self.verified_only and fold(nick) != fold(self.nick) and not self.pins.verified(nick):
            return "unverified", (f"{self.nick} shares keys only with verified members; "
                                  f"compare safety numbers with /verify {self.nick}")
        return None

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
        try:
            yield self.request("ROTATE", room.name, str(epoch), b64encode(record.encode()),
                               b64encode(signature), b64encode(wraps[self.identity.fingerprint]))
        except WireError as error:
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
        for member in members.values():
            if member["identity"] is not None and member["identity"] in included \
                    and fold(member["nick"]) != fold(self.nick):
                wrapped = b64encode(wraps[member["identity"].fingerprint])
                self.request("WRAP", room.name, str(epoch), member["nick"], wrapped).addErrback(
                    self._wrap_failed, room.name, member["nick"])
        return epoch

    def _wrap_failed(self, failure, room: str, nick: str) -> None:
        failure.trap(WireError, ConnectionLost)
        self.emit("error", code=getattr(failure.value, "code", "DISCONNECTED"),
                  message=f"could not hand {nick} the key of {room}: {failure.getErrorMessage()}")

    # -- receiving messages ---------------------------------------------------------

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
        epochs = range(message.epoch, max(room.epoch, message.epoch) + 1)
        if all(self.keys.record(room.name, e) is not None for e in epochs):
            self._await_key(room, message.epoch)
            return
        d = self._epochs.run(f"{fold(room.name)}|{message.epoch}",
                             lambda: self.request("EPOCHS", room.name, str(message.epoch)))
        d.addCallback(lambda _: self._records_checked())
        d.addCallback(lambda _: self._await_key(room, message.epoch))
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
        room = self._room(name)
        yield self.request("PART", room.name, *([reason] if reason else []))
        self._drop_room(fold(name))

    def send_text(self, room_name: str, text: str) -> OutboxEntry:
        room = self._room(room_name)
        entry = self.outbox.add(room.name, text)
        self.save()
        self._pump()
        return entry

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
        reply = yield self.request("LIST", process=False)
        return [{"room": a["room"], "members": a["members"], "topic": a["topic"]}
                for _, a in reply.lines]

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

    # -- sending -------------------------------------------------------------------

    def _pump(self) -> None:
        """Put waiting messages on the wire, as keys and the window allow."""
        if not self.live or self.outbox.in_flight() >= SEND_WINDOW:
            return
        blocked = set()
        for entry in self.outbox.waiting():
            if self.outbox.in_flight() >= SEND_WINDOW:
                return
            if entry.room_key in blocked:
                continue
            room = self.rooms.get(entry.room_key)
            if room is None:
                self.outbox.remove(entry)
                self._send_failed(entry, "NOT_MEMBER", f"you are not in {entry.room}")
                continue
            key = self.keys.key(room.name, room.epoch) if room.epoch >= FIRST_EPOCH else None
            if entry.room_key in self._rotating or key is None:
                blocked.add(entry.room_key)
                if key is None and entry.room_key not in self._rotating:
                    self._without_key(room)
                continue
            if room.epoch_load + self.outbox.in_flight() >= ROTATE_AFTER_MESSAGES:
                blocked.add(entry.room_key)
                if not self.outbox.in_flight():
                    self._start_rotation(room, f"key used for {ROTATE_AFTER_MESSAGES} messages")
                continue
            room.key_wait_since = None
            self._transmit(entry, room, key)

    def _without_key(self, room: LocalRoom) -> None:
        """We want to send but hold no current key: get one, or make one."""
        if room.epoch < FIRST_EPOCH:
            self._start_rotation(room, "first key of the room")
            return
        self._check_key(room)
        if room.history != "joined":
            return
        waited = self.clock.seconds() - (room.key_wait_since or self.clock.seconds())
        if waited >= KEY_WAIT_SECONDS:
            self._start_rotation(room, "no key holder answered")
        elif fold(room.name) not in self._wait_calls:
            self._wait_calls[fold(room.name)] = self.clock.callLater(
                KEY_WAIT_SECONDS - waited, self._wait_over, fold(room.name))

    def _wait_over(self, key: str) -> None:
        del self._wait_calls[key]
        self._pump()

    def _start_rotation(self, room: LocalRoom, reason: str) -> None:
        self.rotate(room.name, reason).addErrback(self._rotation_failed, room)

    def _rotation_failed(self, failure, room: LocalRoom) -> None:
        if failure.check(ConnectionLost):
            return
        self.emit("error", code=getattr(failure.value, "code", "CLIENT"),
                  message=f"could not rotate the key of {room.name}: {failure.getErrorMessage()}")
        for entry in self.outbox.drop_room(room.name):
            self._send_failed(entry, "ROTATION_FAILED", failure.getErrorMessage())

    def _transmit(self, entry: OutboxEntry, room: LocalRoom, key: bytes) -> None:
        if entry.seq is None:
            entry.seq = room.next_seq
            room.next_seq += 1
            self.save()
        header = MessageHeader(room.name, room.epoch, entry.seq, entry.message_id)
        token, signature = seal(key, self.identity, header, entry.text,
                                int(self.clock.seconds()))
        self.outbox.sending(entry)
        entry.epoch = room.epoch
        d = self.request("MSG", room.name, str(room.epoch), str(entry.seq),
                         b64encode(entry.message_id), b64encode(token), b64encode(signature),
                         process=False)
        d.addCallbacks(self._acknowledged, self._refused, (entry, room), None, (entry, room))

    def _acknowledged(self, reply, entry: OutboxEntry, room: LocalRoom) -> None:
        verb, args = reply.final
        server_seq = args["server_seq"] if verb == "DUPLICATE" else int(args["a"])
        self.outbox.remove(entry)
        if entry.epoch == room.epoch:
            room.epoch_load += 1
        room.seen.append(entry.message_id.hex())
        own = room.senders.get(fold(self.nick))
        if not isinstance(own, dict):
            own = room.senders[fold(self.nick)] = {"first": entry.seq, "last": entry.seq,
                                                   "holes": []}
        own["last"] = max(own["last"], entry.seq)
        self.save()
        self.emit("sent", room=entry.room, text=entry.text, server_seq=server_seq, seq=entry.seq)
        self._after_send()

    def _refused(self, failure, entry: OutboxEntry, room: LocalRoom) -> None:
        self.outbox.returned(entry)
        if failure.check(ConnectionLost):
            return
        error = failure.value
        code = getattr(error, "code", None)
        if code == Code.REKEY_REQUIRED:
            if entry.epoch == room.epoch:
                self._start_rotation(room, "the server requires a new key")
            else:
                self._pump()
        elif code == Code.STALE_EPOCH:
            self.request("EPOCHS", room.name, str(room.epoch + 1)).addCallback(
                lambda _: (self._check_key(room), self._pump())).addErrback(
                lambda f: f.trap(WireError, ConnectionLost))
        elif code in (Code.RATE_LIMITED, Code.INTERNAL):
            # Transient on the server's side: the message stays and goes again.
            self.clock.callLater(RETRY_SECONDS, self._pump)
        else:
            self.outbox.remove(entry)
            self._send_failed(entry, code or "CLIENT", failure.getErrorMessage())
            self._after_send()

    def _send_failed(self, entry: OutboxEntry, code: str, text: str) -> None:
        self.failed_sends += 1
        self.save()
        self.emit("error", code=str(code), message=f"message to {entry.room} not sent: {text}",
                  room=entry.room, text=entry.text)
        self._after_send()

    def _after_send(self) -> None:
        if not len(self.outbox):
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        else:
            self._pump()
