# -*- test-case-name: tests.test_housekeeping -*-
"""What keeps the daemon's disk bounded without anyone watching: expired
messages deleted in the background, and each user's stored bytes written
down (and, with several daemons, read back).

Nothing here is on a request's path. Each job is small and bounded (a purge
deletes at most ROOM_PURGE_BATCH messages per transaction), a job that fails
is logged and tried again next time, and a full disk only delays it.
"""

from twisted.internet import defer, task
from twisted.logger import Logger

from securechat.constants import (
    RETENTION_CHECK_SECONDS,
    ROOM_PURGE_BATCH,
    USAGE_SYNC_SECONDS,
)
from securechat.server.limits import SECONDS_PER_DAY
from securechat.server.store import StorageFull

log = Logger()


class Housekeeping:
    """Runs the jobs for C{chat} (a L{ChatService}), which starts it once it
    has loaded and stops it before its store closes."""

    def __init__(self, chat, clock):
        self._chat = chat
        self._clock = clock
        self._loops: list[task.LoopingCall] = []
        self._running: set[defer.Deferred] = set()

    def start(self) -> None:
        for job, interval in ((self.sync_usage, USAGE_SYNC_SECONDS),
                              (self.expire_messages, RETENTION_CHECK_SECONDS)):
            loop = task.LoopingCall(self._run, job)
            loop.clock = self._clock
            loop.start(interval, now=True)
            self._loops.append(loop)

    def stop(self) -> defer.Deferred:
        """Stop the loops; fire once the jobs under way are done and the last
        counts are written."""
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        # The last counts are written before the database closes.
        return defer.DeferredList([*self._running, self._run(self.sync_usage)])

    def _run(self, job) -> defer.Deferred:
        """One run of C{job}; a failure is logged, never stops the loop."""
        d = defer.maybeDeferred(job)
        d.addErrback(self._failed, job.__name__)
        self._running.add(d)
        d.addBoth(lambda result: (self._running.discard(d), result)[1])
        return d

    @staticmethod
    def _failed(failure, name: str) -> None:
        if failure.check(StorageFull):
            log.warn("{job}: the database's disk is full; trying again later", job=name)
        else:
            log.failure("{job} failed; trying again later", failure, job=name)

    @defer.inlineCallbacks
    def sync_usage(self):
        """Write down the bytes stored since last time, then read the day's
        totals back (they include other daemons')."""
        budget, store = self._chat.budget, self._chat.store
        day, unsaved = budget.take_unsaved(self._clock.seconds())
        if unsaved:
            try:
                yield store.add_usage(day, unsaved)
            except BaseException:
                budget.restore(unsaved)
                raise
        budget.stored_today(day, (yield store.usage(day)))
        budget.forget_idle(self._clock.seconds())

    @defer.inlineCallbacks
    def expire_messages(self):
        """Delete every room's messages older than its retention, a batch per
        transaction, so that the daemon serves everyone in between."""
        now = self._clock.seconds()
        expired = 0
        for room in list(self._chat.rooms):
            days = self._chat.retention_days(room)
            if not days:
                continue
            while True:
                count = yield self._chat.store.purge_messages(
                    room.id, now - days * SECONDS_PER_DAY, ROOM_PURGE_BATCH)
                expired += count
                if count < ROOM_PURGE_BATCH:
                    break
        if expired:
            log.info("deleted {count} expired messages", count=expired)
        return expired
