# -*- test-case-name: tests.test_operator -*-
"""What the operator changes with ``securechat-admin`` while the daemon runs.

The admin tool writes to the database directly; the daemon notices within
seconds, because SQLite's ``data_version`` moves only when another process
commits, and then applies the change to what it holds in memory: a banned
account is disconnected at once. Nothing to signal, nothing to restart.
"""

from twisted.internet import defer, task
from twisted.logger import Logger

from securechat.constants import OPERATOR_POLL_SECONDS
from securechat.wire import Code

log = Logger()


def drop_connections(fanout, user_id: int, code: Code, text: str) -> None:
    """End every live session of a user, telling each why."""
    for connection in fanout.connections(user_id):
        connection.drop(code, text)


class OperatorChanges:
    def __init__(self, store, accounts, fanout, clock):
        self._store = store
        self._accounts = accounts
        self._fanout = fanout
        self._poll = task.LoopingCall(self.check)
        self._poll.clock = clock
        self._version = None
        self._checking = False
        self._stopped = defer.succeed(None)

    def start(self) -> None:
        self._stopped = self._poll.start(OPERATOR_POLL_SECONDS, now=True)

    def stop(self) -> defer.Deferred:
        """Stop polling; fire once a check under way is over (the store may close then)."""
        if self._poll.running:
            self._poll.stop()
        return self._stopped

    @defer.inlineCallbacks
    def check(self):
        """Apply what another process committed since the last look."""
        if self._checking:
            return
        self._checking = True
        try:
            version = yield self._store.data_version()
            if self._version is not None and version != self._version:
                self.apply((yield self._store.load_users()))
            self._version = version
        except Exception:
            log.failure("checking for the operator's changes failed; trying again later")
        finally:
            self._checking = False

    def apply(self, users) -> None:
        for user_id in self._accounts.ids() - {row.id for row in users}:
            gone = self._accounts.remove(user_id)
            log.info("the operator deleted the idle account {nick}", nick=gone.nick)
            drop_connections(self._fanout, user_id, Code.NO_SUCH_USER,
                             "this account was deleted by the server's operator")
        for row in users:
            current = self._accounts.find(row.nick)
            if current is None or current.banned == row.banned:
                continue
            current.banned = row.banned
            if row.banned:
                log.info("the operator banned {nick}; closing their sessions", nick=row.nick)
                drop_connections(self._fanout, row.id, Code.ACCOUNT_BANNED,
                                 "this account was banned by the server's operator")
            else:
                log.info("the operator lifted the ban on {nick}", nick=row.nick)
