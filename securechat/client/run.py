"""Starting the reactor for a client: logging to a file, the session, the
connector, and the batch runner reading standard input. The console's
equivalent is L{securechat.console.app}."""

import sys

from twisted.internet import stdio
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.protocols.basic import LineReceiver

from securechat.client.batch import EXIT_FATAL, BatchRunner
from securechat.client.connector import Connector
from securechat.client.session import ClientSession
from securechat.lineprotocol import tls_exporter


class _StandardInput(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1024 * 1024

    def __init__(self, runner: BatchRunner):
        self.runner = runner

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        self.runner.line_received(line.decode("utf-8", "replace"))

    def connectionLost(self, reason) -> None:  # noqa: N802
        if self._buffer:
            self.runner.line_received(self._buffer.decode("utf-8", "replace"))
        self.runner.end_of_input()


def start_logging(path: str) -> None:
    """Twisted's log goes to a file in --home, never to the terminal."""
    log_file = open(path, "a", encoding="utf-8")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)],
                                     redirectStandardIO=False)


def build_session(reactor, options, home, identity, keys, state, server) -> ClientSession:
    """The session of either front end, saving into --home as it goes."""

    def save(session_state: dict) -> None:
        home.save_state({**session_state, "server": server}, keys)

    session = ClientSession(identity, state["nick"], state, reactor, save, tls_exporter,
                            share_with_verified_only=options.verified_only,
                            registration_token=options.token)
    save(session.state())
    return session


def run_batch(options, home, identity, keys, state, host, port, server, trust) -> int:
    from twisted.internet import reactor

    start_logging(home.log_path)
    session = build_session(reactor, options, home, identity, keys, state, server)

    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    runner = BatchRunner(session, reactor, write, linger=options.linger,
                         connect_timeout=options.connect_timeout)
    connector = Connector(reactor, session, host, port, trust)
    outcome = {"code": EXIT_FATAL}

    def finished(code: int) -> None:
        outcome["code"] = code
        session.save_now()
        stopping = connector.stop()
        if stopping is not None:
            stopping.addBoth(lambda _: reactor.stop())
        else:
            reactor.stop()

    runner.done.addCallback(finished)
    stdio.StandardIO(_StandardInput(runner))
    runner.start()
    connector.start()
    reactor.run()
    return outcome["code"]
