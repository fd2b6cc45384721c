"""Private PostgreSQL and Redis servers for the tests.

PostgreSQL is started on first use, once per test process, in its own
temporary folder, reachable only on a unix socket there, and stopped when the
process exits; each test gets a database of its own. Redis is one server per
test (L{PrivateRedis}), since tests stop and restart it. The system's own
servers, if any, are never touched.
"""

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import quote

import psycopg2
from twisted.trial.unittest import SkipTest

from tests.daemon import free_port

POSTGRES_MISSING = "PostgreSQL is not installed: run .ci/run or apt-get install postgresql"
REDIS_MISSING = "Redis is not installed: run .ci/run or apt-get install redis-server"

# Debian keeps the server's programs off PATH, in one folder per major version.
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
POSTGRES_SUPERUSER = "postgres"
# With no TCP listener the port only names the socket file in our folder.
POSTGRES_PORT = 5432
# initdb and postgres refuse to run as root: as root, run them as the first
# of these accounts that exists (the Debian package creates "postgres").
SERVER_ACCOUNTS = ("postgres", "nobody")

START_SECONDS = 30
POLL_SECONDS = 0.05
LOG_TAIL_CHARS = 2000


def _log_tail(path: str) -> str:
    with open(path, errors="replace") as log:
        return log.read()[-LOG_TAIL_CHARS:]


def _server_account() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in SERVER_ACCOUNTS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(f"running as root, and none of {SERVER_ACCOUNTS} exists to run PostgreSQL")


def _postgres_bin_dir() -> str:
    on_path = shutil.which("initdb")
    if on_path:
        return os.path.dirname(os.path.realpath(on_path))
    versions = [path for path in glob.glob(POSTGRES_BIN_GLOB)
                if os.access(os.path.join(path, "initdb"), os.X_OK)]
    if not versions:
        raise SkipTest(POSTGRES_MISSING)
    return max(versions, key=lambda path: [int(n) for n in path.split("/")[-2].split(".")])


class PrivatePostgres:
    """A PostgreSQL server of our own: initdb in a temporary folder, a unix
    socket there, stopped (and removed) at exit or by stop()."""

    def __init__(self):
        self._bin = _postgres_bin_dir()
        account = _server_account()
        self.folder = tempfile.mkdtemp(prefix="securechat-pg-")
        self._as_server = {}
        if account is not None:
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self._as_server = {"user": account.pw_uid, "group": account.pw_gid,
                               "extra_groups": []}
        self._data = os.path.join(self.folder, "data")
        self._log = os.path.join(self.folder, "postgres.log")
        self._databases = 0
        try:
            self._run("initdb", "--pgdata", self._data, "--username", POSTGRES_SUPERUSER,
                      "--auth", "trust", "--no-locale", "--encoding", "UTF8")
            with open(os.path.join(self._data, "postgresql.conf"), "a") as conf:
                conf.write(f"listen_addresses = ''\nunix_socket_directories = '{self.folder}'\n"
                           f"port = {POSTGRES_PORT}\n")
            self._run("pg_ctl", "--pgdata", self._data, "--log", self._log, "--wait",
                      "--timeout", str(START_SECONDS), "start")
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        atexit.register(self.stop)
        self._admin = psycopg2.connect(self.url("postgres"))
        self._admin.autocommit = True

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [os.path.join(self._bin, program), *args], check=False, cwd=self.folder,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, **self._as_server,
        )
        if result.returncode != 0:
            log = _log_tail(self._log) if os.path.exists(self._log) else ""
            raise RuntimeError(f"{program} failed: {result.stderr[-LOG_TAIL_CHARS:]}{log}")

    def url(self, database: str) -> str:
        return (f"postgresql://{POSTGRES_SUPERUSER}@/{database}"
                f"?host={quote(self.folder, safe='')}&port={POSTGRES_PORT}")

    def create_database(self) -> str:
        self._databases += 1
        name = f"test_{self._databases}"
        with self._admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        with self._admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE {name} WITH (FORCE)")

    @property
    def pid(self) -> int:
        """The postmaster's process id (its backends are its children)."""
        with open(os.path.join(self._data, "postmaster.pid")) as f:
            return int(f.readline())

    def stop(self) -> None:
        if os.path.exists(self._data):
            self._run("pg_ctl", "--pgdata", self._data, "--mode", "immediate", "--wait", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivateRedis:
    """A redis-server of the test's own: loopback only, a temporary folder,
    nothing saved; restart() brings it back on the same port, empty."""

    def __init__(self):
        self._program = shutil.which("redis-server")
        if self._program is None:
            raise SkipTest(REDIS_MISSING)
        self.port = free_port()
        self._process = self._folder = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *options: str) -> None:
        """Start the server, with C{options} added to its command line."""
        self._folder = tempfile.mkdtemp(prefix="securechat-redis-")
        log_path = os.path.join(self._folder, "redis.log")
        with open(log_path, "w") as log:
            self._process = subprocess.Popen(
                [self._program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self._folder, *options],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as log:
                    tail = log.read()[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start: {tail}")
            time.sleep(POLL_SECONDS)

    def command(self, *words: str) -> bytes:
        """One inline command; the first line of its reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=START_SECONDS) as conn:
            conn.sendall(" ".join(words).encode() + b"\r\n")
            return conn.makefile("rb").readline().rstrip(b"\r\n")

    def _answers(self) -> bool:
        try:
            # -NOAUTH when started with --requirepass: it answers all the same.
            return self.command("PING") in (b"+PONG", b"-NOAUTH Authentication required.")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server, as a crash would, and remove its folder."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    @property
    def pid(self) -> int:
        return self._process.pid

    def restart(self, *options: str) -> None:
        self.stop()
        self.start(*options)


_running = {}


def _service(kind):
    if kind not in _running:
        _running[kind] = kind()
    return _running[kind]


def postgres_database(case) -> str:
    """The URL of a new, empty database on the private PostgreSQL, dropped
    after C{case}'s test (even if connections to it are still open)."""
    server = _service(PrivatePostgres)
    name = server.create_database()
    case.addCleanup(server.drop_database, name)
    return server.url(name)
