"""Writing secrets to disk: owner-only from the first byte, and atomically,
so a crash leaves either the old file or the new one, never half of one."""

import os

from securechat.constants import PRIVATE_FILE_MODE


def write_private(path: str, data: bytes) -> None:
    """Replace C{path} with C{data} (mode 0600) via a synced temporary file."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
