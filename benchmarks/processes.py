"""The processes a benchmark run is made of: one freshly started server (the
bare relay or the daemon) and the load-generator workers that talk to it.

Workers speak JSON lines on stdin/stdout: a plan, then "go", then any
further command the scenario needs; each answer is one JSON line. Every
process gets as many file descriptors as the hard limit allows, since a
connections run holds ten thousand sockets on each side.
"""

import json
import os
import re
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from benchmarks.identities import CACHE_DIR
from securechat.server.sqlstore import SCHEMA_VERSION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+).*?Fingerprint=([0-9A-F:]{95})", re.S)
# The daemon listens before its database is loaded and refuses connections
# until it is: with a big history that takes a while.
_LOADED = re.compile(rb"loaded \d+ accounts")
_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 300.0


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User and system CPU of a process (and of its live children), from /proc."""
    pids = [pid]
    if with_children:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            pids.append(int(entry))
                except (OSError, IndexError):
                    continue
    total = 0
    for each in pids:
        try:
            with open(f"/proc/{each}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def raise_file_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (run in each child before exec)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        with open("/proc/sys/fs/nr_open") as f:
            hard = int(f.read())
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def source_address(index: int) -> str:
    """A loopback source address of its own for client C{index} (up to 62,500):
    the daemon's per-address connection cap stays as configured for real use."""
    return f"127.{1 + index // 62500}.{1 + index // 250 % 250}.{1 + index % 250}"


@dataclass
class Server:
    kind: str
    process: subprocess.Popen
    port: int
    fingerprint: str
    workdir: str
    started_in: float

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024

    def stop(self, keep: bool = False) -> None:
        """SIGTERM (the daemon then commits and closes its database), and remove
        the data dir unless C{keep}."""
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_server(kind: str, data_dir: str | None = None, options=()) -> Server:
    """A fresh relay or daemon on a free port, serving once it is ready.

    @param data_dir: the daemon's data dir (removed on stop); a new empty one
        if None.
    @param options: more daemon options (--database, --redis, ...).
    """
    workdir = data_dir or tempfile.mkdtemp(prefix=f"bench-{kind}-")
    if kind == "relay":
        args = [sys.executable, "-m", "benchmarks.relay", "0", workdir]
    else:
        # The storage budget is a policy for people, not a cost: a load
        # generator's senders store far more than any person, so it is off.
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "--nodaemon", "--pidfile=", "securechat", "--interface", "127.0.0.1",
                "--port", "0", "--data-dir", workdir, "--store-bytes-per-second", "0",
                "--store-bytes-per-day", "0", *options]
    started = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=environment(), cwd=ROOT, preexec_fn=raise_file_limit)
    output = b""
    deadline = started + START_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
        line = process.stdout.readline() if ready else b""
        if not line:
            break
        output += line
        match = _LISTENING.search(output)
        if match and (kind == "relay" or _LOADED.search(output)):
            # Drain the rest of its output in the background so it never blocks.
            subprocess.Popen(["cat"], stdin=process.stdout, stdout=subprocess.DEVNULL)
            return Server(kind, process, int(match.group(1)), match.group(2).decode(), workdir,
                          time.monotonic() - started)
    process.kill()
    process.wait()
    shutil.rmtree(workdir, ignore_errors=True)
    raise RuntimeError(f"{kind} did not start:\n{output.decode(errors='replace')}")


def cache_path(name: str) -> str:
    """Where a prepared daemon data dir is kept. The schema version is in the
    name: a cache is never migrated, it is made anew."""
    return os.path.join(CACHE_DIR, f"{name}-v{SCHEMA_VERSION}")


def build_data_dir(path: str, prepare, finish=None) -> str:
    """Make the cached data dir C{path}: C{prepare(server)} talks to a daemon
    started on an empty one, which is then stopped, and C{finish(data_dir)} may
    write to its database. Only a complete one is ever at C{path}."""
    building = path + ".building"
    shutil.rmtree(building, ignore_errors=True)
    os.makedirs(building)
    server = start_server("daemon", data_dir=building)
    try:
        prepare(server)
    finally:
        server.stop(keep=True)
    if finish is not None:
        finish(building)
    os.rename(building, path)
    return path


def copy_data_dir(path: str) -> str:
    """A fresh copy of a cached data dir, for one run (the daemon writes to it)."""
    workdir = tempfile.mkdtemp(prefix="bench-daemon-")
    shutil.copytree(path, workdir, dirs_exist_ok=True)
    return workdir


class Workers:
    """Load-generator processes running C{module}, one plan each."""

    def __init__(self, module: str, plans: list[dict]):
        self.processes = []
        try:
            for plan in plans:
                process = subprocess.Popen([sys.executable, "-m", module],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           env=environment(), cwd=ROOT,
                                           preexec_fn=raise_file_limit)
                self.processes.append(process)
                self._send(process, json.dumps(plan))
            self.answers("ready")
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _send(process, line: str) -> None:
        process.stdin.write(line.encode() + b"\n")
        process.stdin.flush()

    def command(self, name: str) -> list[dict]:
        """Send C{name} ("go", ...) to every worker, then read each one's answer."""
        for process in self.processes:
            self._send(process, name)
        return self.answers(name)

    def answers(self, what: str) -> list[dict]:
        replies = []
        for process in self.processes:
            reply = json.loads(process.stdout.readline() or b'{"error": "worker died"}')
            if "error" in reply:
                raise RuntimeError(f"load generator ({what}): {reply['error']}")
            replies.append(reply)
        return replies

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
