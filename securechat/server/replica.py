# -*- test-case-name: tests.test_cluster -*-
"""This daemon's copy of the shared state, kept in step with the database.

One daemon alone holds the only copy of its rooms and accounts in memory;
then this class only delivers each stored message in order. When several
daemons share a database, another daemon's notice (see L{ClusterFanOut})
says what to re-read: a room, an account, or a room's messages up to some
seq. Re-reads of one room never overlap, and a notice that arrives during
one is served by another read after it, so the copy always ends at what the
database held after the last change. Messages reach local members in seq
order, read back from the database when any is missing here.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from securechat.constants import MAX_HISTORY_PAGE
from securechat.server import events
from securechat.server.cluster import IClusterListener
from securechat.wire import Code

log = Logger()


class _Serial:
    """Runs one job per key at a time. Asking during a run means one more run
    after it; the Deferred returned fires once a run that started after the
    asking has finished."""

    def __init__(self):
        self._waiting: dict = {}

    def run(self, key, job) -> defer.Deferred:
        if key in self._waiting:
            done = defer.Deferred()
            self._waiting[key].append(done)
            return done
        self._waiting[key] = []
        return self._loop(key, job)

    @defer.inlineCallbacks
    def _loop(self, key, job):
        served = []
        try:
            while True:
                try:
                    yield job()
                except Exception:
                    log.failure("re-reading {key} from the database failed", key=key)
                for done in served:
                    done.callback(None)
                served, self._waiting[key] = self._waiting[key], []
                if not served:
                    break
        finally:
            del self._waiting[key]


# Store methods that change one room, with where its id is in their arguments.
_ROOM_ID_FIRST = frozenset({"append_entry", "update_room", "delete_room", "delete_wrap_request"})
_ROW_FIRST = frozenset({"add_wrap", "put_wrap_request"})


class _TrackedStore:
    """The store, telling the replica which room each write changes and when
    it has committed. Everything else passes straight through."""

    def __init__(self, store, replica: "Replica"):
        self._store = store
        self._replica = replica

    def __getattr__(self, name):
        method = getattr(self._store, name)
        if name in _ROOM_ID_FIRST:
            return self._tracked(method, lambda args: args[0])
        if name in _ROW_FIRST:
            return self._tracked(method, lambda args: args[0].room_id)
        return method

    def _tracked(self, method, room_of):
        def write(*args, **kwargs):
            room_id = room_of(args)
            self._replica.write_started(room_id)
            return method(*args, **kwargs).addBoth(self._replica.write_ended, room_id)

        return write


@implementer(IClusterListener)
class Replica:
    """A re-read must never undo a change this daemon is making: a read that
    began before one of this daemon's writes to the room committed, or lands
    while one is under way (its change already applied here), is dropped, and
    the room is read again once the write is done."""

    def __init__(self, service):
        self._service = service
        self._reads = _Serial()
        self._targets: dict[int, int] = {}
        # (room, sender, sender's seq) -> the connection that sent it, from
        # before the commit until whichever path delivers it.
        self._senders: dict[tuple[int, int, int], object] = {}
        self._writing: dict[int, int] = {}
        self._writes_done: dict[int, int] = {}
        self._read_again: set[int] = set()

    def tracking(self, store):
        """The store as the service should use it: see L{_TrackedStore}."""
        return _TrackedStore(store, self)

    def write_started(self, room_id: int) -> None:
        self._writing[room_id] = self._writing.get(room_id, 0) + 1

    def write_ended(self, result, room_id: int):
        self._writing[room_id] -= 1
        if not self._writing[room_id]:
            del self._writing[room_id]
        self._writes_done[room_id] = self._writes_done.get(room_id, 0) + 1
        if room_id in self._read_again and room_id not in self._writing:
            self._read_again.discard(room_id)
            self.reload_room(room_id)
        return result

    def _overtaken(self, room_id: int, writes_done: int) -> bool:
        """Whether a read that began when C{writes_done} writes were done may
        be older than what this daemon holds; if so, it is read again later."""
        if room_id in self._writing:
            self._read_again.add(room_id)
            return True
        if self._writes_done.get(room_id, 0) != writes_done:
            self.reload_room(room_id)
            return True
        return False

    # -- messages ------------------------------------------------------------

    def sending(self, row, connection) -> bool:
        """A message is about to be stored: whichever path delivers it (next
        in line, or read back with others after a gap, possibly before its
        commit has come back here) leaves out the connection that sent it.
        A copy sent again while the first is on its way changes nothing.

        @return: whether this copy is the one remembered (only that one may
            be forgotten through L{not_stored})."""
        key = (row.room_id, row.sender_id, row.seq)
        if key in self._senders:
            return False
        self._senders[key] = connection
        return True

    def not_stored(self, row) -> None:
        """The copy that L{sending} remembered was refused or was already
        stored: nothing to deliver for it."""
        self._senders.pop((row.room_id, row.sender_id, row.seq), None)

    def deliver(self, room, row, line: bytes) -> None:
        """A message this daemon stored: delivered now if it is next in its
        room, else after the ones before it, read from the database (a read
        may already have delivered it)."""
        if row.server_seq == room.last_seq + 1:
            room.last_seq = row.server_seq
            sender = self._senders.pop((row.room_id, row.sender_id, row.seq), None)
            self._service.fanout.deliver_here(room.members, line, sender)
            return
        self.messages_up_to(room.id, row.server_seq)

    def message_arrived(self, room_id: int, server_seq: int, epoch: int, line: bytes) -> None:
        """Another daemon's message: delivered from its notice when it is next
        in line and nothing is being read back, else read from the database."""
        room = self._service.rooms.get(room_id)
        if room is None or room_id in self._targets or server_seq != room.last_seq + 1:
            self.messages_up_to(room_id, server_seq)
            return
        room.last_seq = server_seq
        if epoch == room.epoch:
            room.epoch_messages += 1
        self._service.fanout.deliver_here(room.members, line)

    def messages_up_to(self, room_id: int, server_seq: int):
        room = self._service.rooms.get(room_id)
        if room is not None and server_seq <= room.last_seq:
            return defer.succeed(None)
        self._targets[room_id] = max(server_seq, self._targets.get(room_id, 0))
        return self._reads.run(("messages", room_id), lambda: self._catch_up(room_id))

    @defer.inlineCallbacks
    def _catch_up(self, room_id: int):
        service = self._service
        if service.rooms.get(room_id) is None:
            yield self._read_room(room_id)
        room = service.rooms.get(room_id)
        while room is not None and room.last_seq < self._targets.get(room_id, 0):
            rows = yield service.store.history(room_id, None, room.last_seq, MAX_HISTORY_PAGE)
            yield self._know_users({row.sender_id for row in rows})
            if not rows:
                log.warn("{room} should have messages up to {seq} but has {last}",
                         room=room.name, seq=self._targets[room_id], last=room.last_seq)
                break
            for row in rows:
                if row.server_seq <= room.last_seq:
                    continue  # delivered meanwhile, as the next in line
                line = events.line("*", events.message(room, row, service.nick(row.sender_id)))
                key = (room_id, row.sender_id, row.seq)
                ours = key in self._senders
                service.fanout.deliver_here(room.members, line, self._senders.pop(key, None))
                room.last_seq = row.server_seq
                if row.epoch == room.epoch and not ours:
                    # Counted towards the next rotation; this daemon's own
                    # messages were counted when they were stored.
                    room.epoch_messages += 1
            room = service.rooms.get(room_id)
        self._targets.pop(room_id, None)
        if room is None:
            # Deleted: what this daemon stored there will never be delivered,
            # so it no longer needs its sender's connection remembered.
            for key in [key for key in self._senders if key[0] == room_id]:
                del self._senders[key]

    # -- rooms, accounts -----------------------------------------------------

    def fresh(self, room_id: int):
        """Fires once this daemon's copy of the room is as new as the database's:
        at once for a daemon alone, after a re-read when there are several."""
        if not self._service.fanout.several_daemons:
            return defer.succeed(None)
        return self.reload_room(room_id)

    def reload_room(self, room_id: int):
        return self._reads.run(("room", room_id), lambda: self._read_room(room_id))

    @defer.inlineCallbacks
    def _read_room(self, room_id: int):
        writes_done = self._writes_done.get(room_id, 0)
        row, requests = yield self._service.store.load_room(room_id)
        if row is not None:
            yield self._know_users({*row.members, *(i for i, _ in row.invites.values()),
                                    *(r.user_id for r in requests)})
        if self._overtaken(room_id, writes_done):
            return
        stored = row.last_seq if row is not None else 0
        self._apply_room(room_id, row, requests)
        room = self._service.rooms.get(room_id)
        if room is not None and stored > room.last_seq:
            self.messages_up_to(room_id, stored)

    def _apply_room(self, room_id: int, row, requests) -> None:
        service = self._service
        current = service.rooms.get(room_id)
        if row is None:
            if current is not None:
                service.rooms.delete_room(current)
                service.requests.remove_room(room_id)
            return
        if current is not None:
            # What was delivered here, not what is stored: catching up moves it.
            row.last_seq = current.last_seq
        service.logs.adopt(row)
        service.rooms.replace_room(row)
        service.requests.replace_room(room_id, requests)
        service.room_reloaded(row)

    @defer.inlineCallbacks
    def _know_users(self, user_ids):
        """Read in accounts made on another daemon that a room or message names,
        before anything here looks them up."""
        for user_id in user_ids:
            if self._service.accounts.get(user_id) is None:
                row = yield self._service.store.load_user(user_id)
                if row is not None and self._service.accounts.get(user_id) is None:
                    self._service.accounts.add(row)

    def reload_user(self, user_id: int):
        return self._reads.run(("user", user_id), lambda: self._read_user(user_id))

    @defer.inlineCallbacks
    def _read_user(self, user_id: int):
        row = yield self._service.store.load_user(user_id)
        if row is not None:
            self._apply_user(row)

    def _apply_user(self, row) -> None:
        service = self._service
        current = service.accounts.get(row.id)
        if current is None:
            service.accounts.add(row)
            return
        if current.fingerprint != row.fingerprint:
            service.accounts.replace(row)
            service.drop_sessions(row.id, Code.ACCOUNT_RESET,
                                  "this account now has new keys (reset by the operator)")
        elif row.banned and not current.banned:
            current.banned = True
            service.drop_sessions(row.id, Code.ACCOUNT_BANNED,
                                  "this account was banned by the server's operator")
        current.banned = row.banned

    @defer.inlineCallbacks
    def resync(self):
        """Everything, after the bus was down: any notice may have been lost."""
        writes_done = dict(self._writes_done)
        snapshot = yield self._service.store.load()
        for user in snapshot.users:
            self._apply_user(user)
        requests: dict[int, list] = {}
        for request in snapshot.wrap_requests:
            requests.setdefault(request.room_id, []).append(request)
        stored = {room.id: room for room in snapshot.rooms}
        for room in list(self._service.rooms):
            if room.id not in stored and not self._overtaken(room.id,
                                                             writes_done.get(room.id, 0)):
                self._apply_room(room.id, None, [])
        for room in snapshot.rooms:
            if self._overtaken(room.id, writes_done.get(room.id, 0)):
                continue
            last = room.last_seq
            self._apply_room(room.id, room, requests.get(room.id, []))
            self.messages_up_to(room.id, last)

    def daemon_gone(self) -> None:
        self._service.daemon_gone()
