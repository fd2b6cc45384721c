# -*- test-case-name: tests.test_service -*-
"""The chat service: each request checked against the registries, made
durable through the store, then applied in memory and published.

The order is always the same: check, persist, apply, publish, reply. Nothing
is acknowledged or fanned out before the store has committed it. Methods
take the acting user and the request's typed arguments, and fire with the
lines of the reply (data lines first, the final OK last); they never touch a
socket and never read the clock themselves.
"""

from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger

from securechat.constants import (
    LIST_PAGE,
    MAX_HISTORY_PAGE,
    MAX_RETENTION_DAYS,
    ROTATE_AFTER_MESSAGES,
    ROTATE_AFTER_SECONDS,
    SYNC_PAGE,
    WHO_PAGE,
)
from securechat.crypto.roomkeys import FIRST_EPOCH
from securechat.names import fold
from securechat.server import events
from securechat.server.accounts import AccountRegistry, public_identity
from securechat.server.fanout import LocalFanOut, OutputBatch
from securechat.server.housekeeping import Housekeeping
from securechat.server.keydirectory import KeyDirectory
from securechat.server.limits import StorageBudget, StorageLimits
from securechat.server.messagelog import MessageLog
from securechat.server.metrics import ServerMetrics
from securechat.server.operator import OperatorChanges, drop_connections
from securechat.server.passwords import hash_room_password, token_digest
from securechat.server.replica import Replica
from securechat.server.roomlogs import RoomLogs
from securechat.server.rooms import RoomLimits, RoomRegistry, legacy_history
from securechat.server.store import (
    MessageRow,
    NameTaken,
    RegistrationTokenInvalid,
    RoomRow,
    UserRow,
)
from securechat.server.wrapqueue import WrapRequestQueue
from securechat.wire import Code, WireError

log = Logger()

OK = "OK"


def ok(*args: str) -> events.Event:
    return OK, args


@dataclass(frozen=True)
class ServiceSettings:
    server_name: str
    registration: str = "open"
    limits: RoomLimits = RoomLimits()
    # The least time between group commits under load (see MessageLog); none
    # by default, so that tools and tests see each commit at once.
    commit_interval: float = 0.0
    storage: StorageLimits = StorageLimits()
    # Days messages are kept; 0 for ever. A room may ask for less.
    retention_days: int = 0


def _page(items: list, key, after: str | None, size: int) -> tuple[list, tuple[str, ...]]:
    """The items (sorted by C{key}) after C{after}, at most C{size}, and the key to
    ask on from if more follow."""
    if after is not None:
        items = [item for item in items if key(item) > fold(after)]
    page = items[:size]
    return page, (key(page[-1]),) if len(items) > size else ()


def retention_value(value: str | None) -> int:
    """SET retention's argument: days, 0 (or nothing) for the server's setting."""
    text = (value or "0").strip()
    if not text.isdigit() or int(text) > MAX_RETENTION_DAYS:
        raise WireError(Code.BAD_ARGUMENTS, f"retention takes a number of days, 0 to "
                                            f"{MAX_RETENTION_DAYS} (0: the server's setting)")
    return int(text)


class ChatService(service.Service):
    """All chat state of one daemon, loaded at start and kept durable."""

    def __init__(self, store, clock, settings: ServiceSettings, run_blocking=None,
                 fanout=None, metrics: ServerMetrics | None = None):
        self.clock = clock
        self.settings = settings
        self.fanout = fanout or LocalFanOut()
        self._run_blocking = run_blocking or threads.deferToThread
        self.metrics = metrics or ServerMetrics()
        self.metrics.count_rooms(lambda: self.rooms or ())
        self.output = OutputBatch(clock)
        self.messages = MessageLog(store, clock, self.metrics, self.output,
                                   settings.commit_interval)
        self.budget = StorageBudget(settings.storage)
        self.housekeeping = Housekeeping(self, clock)
        self.ready = defer.Deferred()
        self.accounts: AccountRegistry | None = None
        self.rooms: RoomRegistry | None = None
        self.requests: WrapRequestQueue | None = None
        self.replica = Replica(self)
        self.store = self.replica.tracking(store)
        self.logs = RoomLogs(self)
        self.keys = KeyDirectory(self)
        self.operator: OperatorChanges | None = None

    # -- lifecycle -------------------------------------------------------------

    def startService(self):  # noqa: N802
        super().startService()
        d = self.store.load()
        d.addCallback(self._loaded)
        d.addErrback(self._load_failed)
        return d

    def _loaded(self, snapshot) -> None:
        if not self.running:
            # Stopped while loading: start nothing that would use the closed store.
            return None
        self.accounts = AccountRegistry(snapshot.users, self.settings.registration,
                                        snapshot.fingerprints)
        for room in snapshot.rooms:
            self.logs.adopt(room)
        self.rooms = RoomRegistry(snapshot.rooms, self.settings.limits)
        self.requests = WrapRequestQueue(snapshot.wrap_requests)
        log.info("loaded {users} accounts and {rooms} rooms", users=len(self.accounts),
                 rooms=len(self.rooms))
        if self.settings.registration == "open":
            log.warn("registration is open: anyone who can reach this daemon can create "
                     "accounts (accounts.registration = \"token\" gives them out by token)")
        self.operator = OperatorChanges(self.store, self.accounts, self.fanout, self.clock)
        self.operator.start()
        self.housekeeping.start()
        return self.fanout.start(self.replica).addCallback(lambda _: self.ready.callback(self))

    def _load_failed(self, failure) -> None:
        if not self.running:
            # Stopped while loading (its store closed under the load): nothing to refuse.
            return
        log.failure("cannot load the database or join the other daemons; refusing to serve",
                    failure)
        from twisted.internet import reactor

        reactor.stop()

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802
        yield super().stopService()
        if self.operator is not None:
            yield self.operator.stop()
        yield self.fanout.stop()
        yield self.messages.drain()
        if self.ready.called:
            yield self.housekeeping.stop()
        yield self.store.close()

    def now(self) -> float:
        return self.clock.seconds()

    # -- sessions --------------------------------------------------------------

    @defer.inlineCallbacks
    def register(self, nick: str, sign_key: bytes, enc_key: bytes, enc_signature: bytes,
                 verify_login, token: str | None):
        """Create an account; C{verify_login(identity, nick)} checks the login signature.
        An existing nick with a token is the operator's reset of a lost identity."""
        identity = public_identity(sign_key, enc_key, enc_signature)
        existing = self.accounts.find(nick)
        if existing is not None and token:
            return (yield self._reset(existing, identity, verify_login, token))
        digest = self.accounts.check_registration(nick, identity, token)
        try:
            if not verify_login(identity, nick):
                raise WireError(Code.AUTH_FAILED, "the login signature does not verify")
            row = UserRow(0, nick, sign_key, enc_key, enc_signature, identity.fingerprint)
            try:
                row.id = yield self.store.add_user(row, self.now(), digest)
            except RegistrationTokenInvalid:
                raise WireError(Code.BAD_REGISTRATION_TOKEN,
                                "that registration token is unknown or already used") from None
            except NameTaken:
                raise WireError(Code.NICK_TAKEN,
                                f"the nick {nick} or this key was just registered") from None
        finally:
            self.accounts.release(nick)
        self.accounts.add(row)
        self.fanout.user_changed(row.id)
        log.info("registered {nick}", nick=nick)
        return row

    @defer.inlineCallbacks
    def _reset(self, user: UserRow, identity, verify_login, token: str):
        """New keys for a user who lost theirs, with the operator's reset token.
        Their old sessions end, and every room of theirs needs a new key."""
        self.accounts.reserve_reset(user, identity)
        try:
            if not verify_login(identity, user.nick):
                raise WireError(Code.AUTH_FAILED, "the login signature does not verify")
            row = UserRow(user.id, user.nick, identity.sign_der, identity.enc_der,
                          identity.enc_signature, identity.fingerprint, user.banned)
            try:
                yield self.store.reset_user(row, token_digest(token))
            except RegistrationTokenInvalid:
                raise WireError(Code.BAD_REGISTRATION_TOKEN,
                                f"that token does not reset {user.nick}, or was used") from None
        finally:
            self.accounts.release(user.nick)
        self.accounts.replace(row)
        for room in self.rooms.rooms_of(user.id):
            # The lost key holds every key so far: the next message needs a new
            # one, which its new key will get once its client has put it in
            # the room's log.
            room.rekey_required = True
            room.holders.discard(user.id)
            self.fanout.room_changed(room.id)
        self.fanout.user_changed(user.id)
        self.drop_sessions(user.id, Code.ACCOUNT_RESET,
                           "this account now has new keys (reset by the operator)")
        log.info("reset the keys of {nick}", nick=user.nick)
        return row

    def attach(self, user: UserRow, connection) -> None:
        """A connection has logged in as C{user}: serve key requests it can answer."""
        self.fanout.attach(user.id, connection)
        for room in self.rooms.rooms_of(user.id):
            if user.id in room.holders:
                self.keys.dispatch(room)

    def detach(self, user: UserRow, connection) -> None:
        if self.fanout.detach(user.id, connection):
            self.keys.offline(user.id)
            self.holder_offline(user.id)

    def holder_offline(self, user_id: int) -> None:
        """Requests a user was asked to serve go to another holder, here or
        (told by the room's change) on another daemon."""
        for room_id in self.requests.unassign_holder(user_id):
            room = self.rooms.get(room_id)
            if room is not None:
                self.keys.dispatch(room)
                self.fanout.room_changed(room_id)

    def daemon_gone(self) -> None:
        """Requests another daemon's holders were serving are ours to hand out now."""
        for room_id in self.requests.waiting_rooms():
            self.keys.dispatch(self.rooms.by_id(room_id))

    def drop_sessions(self, user_id: int, code: Code, text: str) -> None:
        drop_connections(self.fanout, user_id, code, text)

    def room_reloaded(self, room: RoomRow) -> None:
        """Another daemon changed C{room}; what follows from it here."""
        self.keys.dispatch(room)

    # -- helpers ---------------------------------------------------------------

    def run_blocking(self, function, *args):
        return self._run_blocking(function, *args)

    def publish(self, room: RoomRow, event: events.Event, exclude=None, extra=()) -> None:
        self.fanout.publish([*room.members, *extra], events.line("*", event), exclude)

    def push(self, user_id: int, event: events.Event) -> None:
        self.fanout.publish([user_id], events.line("*", event))

    def nick(self, user_id: int) -> str:
        return self.accounts.by_id(user_id).nick

    def history_policy(self, room: RoomRow) -> str:
        if room.state is not None:
            return room.state.history
        return legacy_history(room.epoch_record)

    def retention_days(self, room: RoomRow) -> int:
        """Days the room's messages are kept (0: for ever): the server's setting,
        or less if the room's owner asked for less."""
        days = [d for d in (self.settings.retention_days, room.retention_days) if d]
        return min(days, default=0)

    def room_state(self, room: RoomRow, user: UserRow, next_seq: int = 1) -> events.Event:
        return events.room_state(room, room.members[user.id], self.history_policy(room),
                                 self.retention_days(room), next_seq)

    def _rekey_due(self, room: RoomRow) -> bool:
        return (
            room.rekey_required
            or room.epoch < FIRST_EPOCH
            or room.epoch_messages >= ROTATE_AFTER_MESSAGES
            or self.now() - room.epoch_created >= ROTATE_AFTER_SECONDS
        )

    @staticmethod
    def check_text(text: str | None, limit: int, what: str) -> str:
        text = text or ""
        if len(text) > limit:
            raise WireError(Code.BAD_ARGUMENTS, f"{what} is over {limit} characters")
        return text

    # -- rooms -----------------------------------------------------------------

    def read_log(self, user: UserRow, name: str, from_index: int):
        return self.logs.read(user, name, from_index)

    def join(self, user: UserRow, name: str, index: int, entry: bytes, signature: bytes,
             password: str | None):
        return self.logs.join(user, name, index, entry, signature, password)

    def append(self, user: UserRow, name: str, index: int, entry: bytes, signature: bytes):
        return self.logs.append(user, name, index, entry, signature)

    @defer.inlineCallbacks
    def set_topic(self, actor: UserRow, name: str, topic: str):
        room = self.rooms.require_role(name, actor.id, "op", "owner")
        topic = self.check_text(topic, self.rooms.limits.max_topic_length, "the topic")
        yield self.store.update_room(room.id, topic=topic)
        room.topic = topic
        self.fanout.room_changed(room.id)
        self.publish(room, events.topic(room, actor.nick))
        return [ok()]

    @defer.inlineCallbacks
    def configure(self, actor: UserRow, name: str, setting: str, value: str | None):
        room = self.rooms.require_role(name, actor.id, "owner")
        if setting == "password":
            digest = (yield self._run_blocking(hash_room_password, value)) if value else None
            yield self.store.update_room(room.id, password_hash=digest)
            room.password_hash = digest
        elif setting == "retention":
            days = retention_value(value)
            yield self.store.update_room(room.id, retention_days=days)
            room.retention_days = days
        else:
            raise WireError(Code.BAD_ARGUMENTS, "the server's settings are password and "
                                                "retention (invite-only is a policy entry "
                                                "of the room's log)")
        self.fanout.room_changed(room.id)
        self.publish(room, events.settings(room, actor.nick, self.history_policy(room),
                                           self.retention_days(room)))
        return [ok()]

    @defer.inlineCallbacks
    def delete(self, actor: UserRow, name: str):
        room = self.rooms.require_role(name, actor.id, "owner")
        yield self.store.delete_room(room.id)
        self.publish(room, events.deleted(room, actor.nick))
        self.rooms.delete_room(room)
        self.requests.remove_room(room.id)
        self.fanout.room_changed(room.id)
        log.info("{nick} deleted {room}", nick=actor.nick, room=room.name)
        return [ok()]

    def list_rooms(self, user: UserRow, after: str | None = None):
        """Open rooms and the user's own, a page at a time in name order: OK says
        how many, and the last name when more follow (LIST again after it)."""
        rooms = {r.id: r for r in self.rooms.public_rooms()}
        rooms.update((r.id, r) for r in self.rooms.rooms_of(user.id))
        listed, more = _page(sorted(rooms.values(), key=lambda r: fold(r.name)),
                             lambda r: fold(r.name), after, LIST_PAGE)
        return [*(events.room_info(r) for r in listed), ok(str(len(listed)), *more)]

    @defer.inlineCallbacks
    def who(self, user: UserRow, name: str, after: str | None = None):
        """A room's members with their keys, a page at a time in nick order."""
        # A client asks just before it wraps a new key: with several daemons,
        # the member list must include whoever joined through another one.
        yield self.replica.fresh(self.rooms.require(name).id)
        room = self.rooms.require(name)
        if room.invite_only and user.id not in room.members:
            raise WireError(Code.NOT_MEMBER, f"{room.name} is invite-only")
        members = [(self.accounts.by_id(m), role) for m, role in room.members.items()]
        page, more = _page(sorted(members, key=lambda m: fold(m[0].nick)),
                           lambda m: fold(m[0].nick), after, WHO_PAGE)
        lines = [events.member(room, member, role, self.fanout.online(member.id))
                 for member, role in page]
        return [*lines, ok(str(len(lines)), *more)]

    def user_keys(self, nick: str):
        return [events.user(self.accounts.require(nick)), ok()]

    # -- messages --------------------------------------------------------------

    def send(self, user: UserRow, name: str, epoch: int, seq: int, message_id: bytes,
             token: bytes, signature: bytes, acknowledge, connection=None,
             behind_checked: bool = False):
        """Store a message, then C{acknowledge} it, then fan it out, in that order.

        @param acknowledge: called with the reply lines once the row committed.
        @param connection: the sender's connection, which gets no echo.
        """
        room = self.rooms.require_member(name, user.id)
        if room.state is not None and user.fingerprint not in room.state.members:
            raise WireError(Code.NOT_MEMBER, f"your key is not a member of {room.name}'s log "
                                             f"(your client puts it there first)")
        if epoch > room.epoch and self.fanout.several_daemons and not behind_checked:
            # A newer epoch than this daemon knows: made through another daemon
            # a moment ago. Read the room, then judge.
            return self.replica.fresh(room.id).addCallback(
                lambda _: self.send(user, name, epoch, seq, message_id, token, signature,
                                    acknowledge, connection, behind_checked=True))
        if epoch < room.epoch:
            raise WireError(Code.STALE_EPOCH, f"{room.name} is at epoch {room.epoch}")
        if self._rekey_due(room):
            raise WireError(Code.REKEY_REQUIRED, f"{room.name} needs a new key before sending")
        if epoch != room.epoch:
            raise WireError(Code.STALE_EPOCH, f"{room.name} is at epoch {room.epoch}")
        self.budget.charge(user.id, len(token) + len(signature), self.now())
        row = MessageRow(room.id, user.id, epoch, seq, message_id, token, signature, self.now())
        remembered = self.replica.sending(row, connection)
        d = self.messages.append(row)
        d.addCallbacks(self._stored, self._not_stored,
                       (room, row, user, acknowledge, remembered), None, (row, remembered))
        return d

    def _not_stored(self, failure, row: MessageRow, remembered: bool):
        self.budget.refund(row.sender_id, len(row.token) + len(row.signature), self.now())
        if remembered:
            self.replica.not_stored(row)
        return failure

    def _stored(self, result, room: RoomRow, row: MessageRow, user: UserRow, acknowledge,
                remembered: bool) -> None:
        if result.outcome != "stored":
            self.budget.refund(user.id, len(row.token) + len(row.signature), self.now())
        if result.outcome != "stored" and remembered:
            self.replica.not_stored(row)
        if result.outcome == "duplicate":
            acknowledge([("DUPLICATE", (str(result.server_seq),))])
            return
        if result.outcome == "gone":
            raise WireError(Code.NO_SUCH_ROOM, f"{room.name} was deleted")
        if result.outcome == "stale":
            self.replica.reload_room(room.id)
            raise WireError(Code.REKEY_REQUIRED,
                            f"{room.name} changed on another server; fetch its key and retry")
        if result.outcome == "seq_reused":
            raise WireError(Code.SEQ_REUSED,
                            f"seq {row.seq} already carried another message ({result.server_seq})")
        if row.epoch == room.epoch:
            room.epoch_messages += 1
        acknowledge([ok(str(result.server_seq))])
        stored = MessageRow(row.room_id, row.sender_id, row.epoch, row.seq, row.message_id,
                            row.token, row.signature, row.received, result.server_seq)
        line = events.line("*", events.message(room, stored, user.nick))
        self.fanout.message_stored(room.id, result.server_seq, row.epoch, line)
        self.replica.deliver(room, stored, line)

    @defer.inlineCallbacks
    def history(self, user: UserRow, name: str, direction: str, server_seq: int, limit: int):
        room = self.rooms.require_member(name, user.id)
        if direction not in ("before", "after"):
            raise WireError(Code.BAD_ARGUMENTS, "history goes before or after a seq")
        limit = min(max(limit, 1), MAX_HISTORY_PAGE)
        rows = yield self.store.history(
            room.id, server_seq if direction == "before" else None,
            server_seq if direction == "after" else None, limit,
        )
        rows = events.within_budget(rows, keep_newest=direction == "before")
        return [*(events.message(room, r, self.nick(r.sender_id)) for r in rows),
                ok(str(len(rows)))]

    @defer.inlineCallbacks
    def sync(self, user: UserRow, positions: dict[str, int]):
        """Everything a reconnecting member missed: per room, its state, the
        epoch records and key wraps they need, and the messages after their
        last seen seq (up to a page; MORE says where to continue)."""
        lines = []
        for room in self.rooms.rooms_of(user.id):
            after = positions.get(fold(room.name), 0)
            page = yield self.store.history(room.id, None, after, SYNC_PAGE)
            rows = events.within_budget(page, keep_newest=False)
            first_epoch = min([r.epoch for r in rows] + [room.epoch])
            next_seq = yield self.store.next_seq(room.id, user.id)
            lines.append(self.room_state(room, user, next_seq))
            lines.extend((yield self.keys.keys_from(room, user, first_epoch)))
            lines.extend(events.message(room, r, self.nick(r.sender_id)) for r in rows)
            if rows and len(rows) < len(page) or len(page) == SYNC_PAGE:
                lines.append(events.more(room, rows[-1].server_seq))
        return [*lines, ok()]

    @defer.inlineCallbacks
    def epochs(self, user: UserRow, name: str, from_epoch: int):
        room = self.rooms.require_member(name, user.id)
        lines = yield self.keys.keys_from(room, user, from_epoch)
        return [*lines, ok()]

    # -- keys ------------------------------------------------------------------

    def rotate(self, user: UserRow, name: str, index: int, entry: bytes, signature: bytes,
               own_wrap: bytes):
        return self.keys.rotate(user, name, index, entry, signature, own_wrap)

    def hand_over(self, user: UserRow, name: str, epoch: int, wraps: str):
        return self.keys.hand_over(user, name, epoch, wraps)

    def share_key(self, user: UserRow, name: str, epoch: int, wraps: str):
        return self.keys.share_key(user, name, epoch, wraps)

    def request_key(self, user: UserRow, name: str):
        return self.keys.request_key(user, name)

    def withhold(self, user: UserRow, name: str, epoch: int, nick: str, code: str,
                 text: str | None):
        return self.keys.withhold(user, name, epoch, nick, code, text)
