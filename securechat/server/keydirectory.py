# -*- test-case-name: tests.test_service -*-
"""The key directory: the wraps of every epoch's key, who waits for one,
and rotations, which take an epoch entry and all of its wraps at once.

A rotator first hands over the wraps for the epoch it is about to make
(WRAPS, for the next epoch number), then appends the epoch entry (ROTATE):
the entry, its wraps and the rotator's own copy are stored in one
transaction, or not at all. So no member named in an epoch is ever left
without the wrap it was promised, whatever happens to the rotator between
the two steps (a crash, a lost connection, leaving the room).
"""

from twisted.internet import defer
from twisted.logger import Logger

from securechat.constants import MAX_REASON_LENGTH, WRAP_BYTES
from securechat.crypto.roomkeys import FIRST_EPOCH
from securechat.roomlog import LogError
from securechat.roomlog.entry import EPOCH, unb64
from securechat.server import events
from securechat.server.roomlogs import decode
from securechat.server.store import EpochRow, LogEffects, RoomRow, UserRow, WrapRequestRow, WrapRow
from securechat.wire import Code, WireError, b64decode

log = Logger()

OK = "OK"


def parse_wraps(text: str) -> dict[bytes, bytes]:
    """WRAPS' "fingerprint:wrap" pairs, by fingerprint."""
    wraps = {}
    for pair in text.split():
        fingerprint, colon, wrap = pair.partition(":")
        try:
            fp, data = b64decode(fingerprint), b64decode(wrap)
        except ValueError:
            raise WireError(Code.BAD_BASE64, "WRAPS pairs are base64url fingerprint:wrap") \
                from None
        if not colon or len(fp) != 32 or len(data) != WRAP_BYTES:
            raise WireError(Code.BAD_ARGUMENTS,
                            f"a WRAPS pair is a fingerprint and a {WRAP_BYTES}-byte wrap")
        wraps[fp] = data
    return wraps


class KeyDirectory:
    """Key wraps and requests for one L{ChatService}."""

    def __init__(self, service):
        self._service = service
        # Wraps handed over for an epoch not made yet: (room, user, epoch) -> {fp: wrap}.
        # Kept per connection's user until its ROTATE, or until it goes offline.
        self._coming: dict[tuple[int, int, int], dict[bytes, bytes]] = {}

    def offline(self, user_id: int) -> None:
        """A user's last connection closed: what it handed over for a rotation it
        never made is of no use."""
        for key in [k for k in self._coming if k[1] == user_id]:
            del self._coming[key]

    # -- rotations ------------------------------------------------------------------

    @defer.inlineCallbacks
    def rotate(self, user: UserRow, name: str, index: int, data: bytes, signature: bytes,
               own_wrap: bytes):
        """ROTATE: the epoch entry, with every wrap it promised, or nothing."""
        service = self._service
        room = service.rooms.require_member(name, user.id)
        if room.state is None:
            raise WireError(Code.NO_LOG, f"{room.name} has no signed log yet")
        signed = decode(data, signature)
        entry = signed.entry
        if entry.kind != EPOCH:
            raise WireError(Code.BAD_ENTRY, "ROTATE takes an epoch entry")
        check_wrap(own_wrap)
        room = yield service.logs.caught_up(room, index)
        if index != room.state.length or entry.index != index:
            raise WireError(Code.LOG_CONFLICT, f"the log of {room.name} has "
                                               f"{room.state.length} entries; fetch them and "
                                               f"try again")
        try:
            room.state.copy().apply(signed)
        except LogError as error:
            raise WireError(Code.BAD_ENTRY, error.reason) from None
        number = entry.body["epoch"]
        recipients = {unb64(r) for r in entry.body["recipients"]}
        coming = self._coming.get((room.id, user.id, number), {})
        missing = recipients - set(coming) - {user.fingerprint}
        if missing:
            raise WireError(Code.WRAPS_MISSING, f"{len(missing)} of the epoch's wraps were not "
                                                f"handed over first (WRAPS)")
        accounts = service.accounts
        wraps = {user.id: (user.id, own_wrap)}
        for fingerprint in recipients - {user.fingerprint}:
            recipient = accounts.by_fingerprint(fingerprint)
            if recipient is None:
                raise WireError(Code.BAD_ENTRY, "the epoch names a key nobody has")
            wraps[recipient.id] = (user.id, coming[fingerprint])
        effects = LogEffects(epoch=EpochRow(room.id, number, user.id, data, signature),
                             wraps=wraps)
        yield service.logs.append_checked(room, user, index, signed, effects)
        self._coming.pop((room.id, user.id, number), None)
        room.epoch, room.epoch_record, room.epoch_created = number, data, service.now()
        room.epoch_messages, room.holders, room.rekey_required = 0, set(wraps), False
        for recipient_id, (_, wrap) in wraps.items():
            service.requests.remove(room.id, recipient_id)
            if recipient_id != user.id:
                service.push(recipient_id, events.key(
                    room, WrapRow(room.id, number, recipient_id, user.id, wrap), user.nick))
        log.info("{nick} rotated {room} to epoch {epoch} ({reason})", nick=user.nick,
                 room=room.name, epoch=number, reason=entry.body.get("reason", ""))
        self.dispatch(room)
        return [(OK, (str(number),))]

    # -- wraps ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def hand_over(self, user: UserRow, name: str, epoch: int, text: str):
        """WRAPS: wraps for the epoch this member is about to append, held until
        its ROTATE (or until they go offline)."""
        service = self._service
        room = service.rooms.require_member(name, user.id)
        if room.state is None:
            raise WireError(Code.NO_LOG, f"{room.name} has no signed log yet")
        wraps = parse_wraps(text)
        if epoch > room.epoch + 1 and service.fanout.several_daemons:
            # Another daemon may have taken an epoch this one has not heard of.
            yield service.replica.fresh(room.id)
            room = service.rooms.require_member(name, user.id)
        if epoch != max(room.epoch, room.state.legacy_epoch) + 1:
            raise WireError(Code.LOG_CONFLICT, f"epoch {epoch} of {room.name} is not the next "
                                               f"one; fetch the log and try again")
        self._coming.setdefault((room.id, user.id, epoch), {}).update(wraps)
        return [(OK, (str(len(wraps)),))]

    @defer.inlineCallbacks
    def share_key(self, user: UserRow, name: str, epoch: int, text: str):
        """HANDOVER: a holder's copies of the current key, for members the log
        says hold it (a share entry, or a copy the server lost); stored and sent."""
        service = self._service
        room = yield self.room_for_epoch(name, user, epoch)
        wraps = parse_wraps(text)
        if epoch != room.epoch or room.state is None or not room.state.holds(user.fingerprint,
                                                                            epoch):
            raise WireError(Code.STALE_EPOCH,
                            f"you can hand out only the current key of {room.name}")
        targets = []
        for fingerprint, wrap in wraps.items():
            target = service.accounts.by_fingerprint(fingerprint)
            if target is None or target.id not in room.members \
                    or not room.state.holds(fingerprint, epoch):
                raise WireError(Code.NOT_MEMBER, "a wrap for someone the log has not given "
                                                 "this key to")
            targets.append((target, WrapRow(room.id, epoch, target.id, user.id, wrap)))
        for target, row in targets:
            yield service.store.add_wrap(row)
            room.holders.add(target.id)
            service.requests.remove(room.id, target.id)
            service.push(target.id, events.key(room, row, user.nick))
        service.fanout.room_changed(room.id)
        self.dispatch(room)
        return [(OK, (str(len(targets)),))]

    @defer.inlineCallbacks
    def room_for_epoch(self, name: str, user: UserRow, epoch: int):
        """The room, to judge a holder's answer for C{epoch} in: read again
        first if the epoch is newer than this daemon has heard of. It was made
        through another daemon a moment ago, perhaps by this very holder before
        its daemon died; refusing would leave members without the key."""
        service = self._service
        room = service.rooms.require_member(name, user.id)
        if epoch > room.epoch and service.fanout.several_daemons:
            yield service.replica.fresh(room.id)
            room = service.rooms.require_member(name, user.id)
        return room

    # -- requests ---------------------------------------------------------------------

    def dispatch(self, room: RoomRow) -> None:
        """Push waiting requests to online holders. Each daemon asks only holders
        connected to it; a room's change makes every daemon look again, so a
        request never waits for the wrong one."""
        service = self._service
        for request, holder in service.requests.assign(room, service.fanout.online_here()):
            service.push(holder, events.wrap_request(room, room.epoch,
                                                     service.nick(request.user_id)))

    @defer.inlineCallbacks
    def request_key(self, user: UserRow, name: str):
        """File (or renew) the durable request for the current key of a room."""
        service = self._service
        room = service.rooms.require_member(name, user.id)
        if room.epoch < FIRST_EPOCH:
            raise WireError(Code.NO_EPOCH, f"{room.name} has no key yet: the next sender "
                                           f"makes one")
        # No shortcut for members the server counts as holders: a wrap it
        # stored for them may have been junk, and only they can tell.
        request = WrapRequestRow(room.id, user.id, room.epoch, service.now())
        yield service.store.put_wrap_request(request)
        service.requests.put(request)
        service.fanout.room_changed(room.id)
        self.dispatch(room)
        return [events.pending(room, room.epoch), (OK, (str(room.epoch),))]

    @defer.inlineCallbacks
    def withhold(self, user: UserRow, name: str, epoch: int, nick: str, code: str,
                 text: str | None):
        service = self._service
        room = yield self.room_for_epoch(name, user, epoch)
        target = service.accounts.require(nick)
        if user.id not in room.holders or epoch != room.epoch:
            raise WireError(Code.NOT_ALLOWED, f"only a holder of the current key of "
                                              f"{room.name} may answer for it")
        request = service.requests.get(room.id, target.id)
        if request is None or request.withheld_code:
            raise WireError(Code.NO_SUCH_REQUEST, f"{target.nick} is not waiting for a key")
        text = service.check_text(text, MAX_REASON_LENGTH, "the explanation")
        withheld = WrapRequestRow(room.id, target.id, epoch, request.created, user.id, code,
                                  text)
        yield service.store.put_wrap_request(withheld)
        service.requests.put(withheld)
        service.fanout.room_changed(room.id)
        service.push(target.id, events.withheld(room, epoch, user.nick, code, text))
        return [(OK, ())]

    # -- what a member is owed ------------------------------------------------------

    @defer.inlineCallbacks
    def keys_from(self, room: RoomRow, user: UserRow, from_epoch: int):
        """The legacy epoch records (before the room's log) and the wraps a member
        has from C{from_epoch} on, and where their request for a key stands."""
        service = self._service
        lines = []
        legacy = room.epoch if room.state is None else room.state.legacy_epoch
        if from_epoch <= legacy:
            for row in (yield service.store.epochs(room.id, from_epoch)):
                if row.epoch <= legacy:
                    lines.append(events.epoch(room, row, service.nick(row.rotator_id)))
        for row in (yield service.store.wraps_for(user.id, room.id, from_epoch)):
            lines.append(events.key(room, row, service.nick(row.wrapper_id)))
        request = service.requests.get(room.id, user.id)
        if request is not None and request.withheld_code:
            lines.append(events.withheld(room, request.epoch, service.nick(request.withheld_by),
                                         request.withheld_code, request.withheld_text or ""))
        elif request is not None:
            lines.append(events.pending(room, room.epoch))
        return lines


def check_wrap(wrap: bytes) -> None:
    if len(wrap) != WRAP_BYTES:
        raise WireError(Code.BAD_ARGUMENTS, f"a wrapped key is {WRAP_BYTES} bytes")
