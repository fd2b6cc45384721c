# -*- test-case-name: tests.test_client_home -*-
"""The client's --home directory: its keystore, its encrypted state, its log.

Formats come from L{securechat.crypto.keystore}; this module only reads and
writes files, owner-only and atomically. A wrong passphrase changes nothing
on disk. One client at a time uses a home: two would write the same
keystore and state, and reuse each other's sequence numbers.
"""

import datetime
import fcntl
import os

from securechat.constants import DATA_DIR_MODE
from securechat.crypto.identity import PrivateIdentity
from securechat.crypto.keystore import (
    KdfParams,
    KeystoreError,
    UnlockedKeys,
    open_identity,
    open_state,
    seal_identity,
    seal_state,
)
from securechat.files import write_private

KEYSTORE_FILE = "identity.json"
STATE_FILE = "state.bin"
LOG_FILE = "client.log"
LOCK_FILE = "client.lock"


class HomeInUse(Exception):
    """Another running client holds the home; the message names it."""


def default_home() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "share")
    return os.path.join(base, "securechat")


class Home:
    def __init__(self, path: str):
        self.path = path
        self._lock_fd: int | None = None

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def log_path(self) -> str:
        return self._file(LOG_FILE)

    def exists(self) -> bool:
        return os.path.exists(self._file(KEYSTORE_FILE))

    def prepare(self) -> None:
        """Create the directory owner-only, or tighten an existing one."""
        os.makedirs(self.path, mode=DATA_DIR_MODE, exist_ok=True)
        os.chmod(self.path, DATA_DIR_MODE)

    def lock(self, what: str) -> None:
        """Hold the home for this process until it exits, or say who holds it.

        An advisory lock (flock) on a file in the home: the kernel lets go of
        it when its process dies however it dies, so a lock left by a crashed
        client is simply taken over. The file says who holds it, for the
        message another client shows.
        """
        self.prepare()
        fd = os.open(self._file(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 512).decode("utf-8", "replace").strip() or "another client"
            os.close(fd)
            raise HomeInUse(f"{self.path} is in use by {holder}; quit that client first, or "
                            f"use another --home") from None
        started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.write(fd, f"securechat-client {what} (pid {os.getpid()}, since {started})".encode())
        self._lock_fd = fd

    def create(self, identity: PrivateIdentity, passphrase: str,
               params: KdfParams | None = None) -> UnlockedKeys:
        """Write a new keystore; refuses to replace an existing one."""
        if self.exists():
            raise KeystoreError(f"{self.path} already holds an identity")
        self.prepare()
        data, keys = seal_identity(identity, passphrase, params)
        write_private(self._file(KEYSTORE_FILE), data)
        return keys

    def open(self, passphrase: str) -> tuple[PrivateIdentity, UnlockedKeys]:
        try:
            with open(self._file(KEYSTORE_FILE), "rb") as f:
                data = f.read()
        except OSError as error:
            raise KeystoreError(f"cannot read {error.filename}: {error.strerror}") from None
        return open_identity(data, passphrase)

    def load_state(self, keys: UnlockedKeys) -> dict:
        try:
            with open(self._file(STATE_FILE), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise KeystoreError(f"cannot read {error.filename}: {error.strerror}") from None
        return open_state(data, keys)

    def save_state(self, state: dict, keys: UnlockedKeys) -> None:
        write_private(self._file(STATE_FILE), seal_state(state, keys))
