"""Atomic file writes (write to a temporary name in the same folder, then rename) and file locks.

A killed process therefore leaves either the old file or the new one, never half of one; and a
lock dies with the process that holds it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """An OSError inside names `path` when the system did not: a failed read or write (a full disk,
    an I/O error) names no file, and the user would not know which."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:  # named already, or not the system's error
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path`.

    On any exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with naming(path):  # a full disk fails a write, which names no file
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour the umask
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)



class Locked(BlockingIOError):
    """Another process holds the lock; `holder` is what it wrote into the lock file."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is locked by {holder or 'another process'}")
        self.path, self.holder = path, holder


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block.

    It is `flock`, which the kernel releases when the process dies, however it dies, and which NFS v4
    and most cluster filesystems carry between hosts. The file says who holds it ("pid P on HOST").
    `timeout=None` waits for the lock; a number of seconds raises `Locked` when it is still held
    elsewhere after that long.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    raise Locked(path, f.read().strip()) from None
                time.sleep(0.05)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_holder(path: str | os.PathLike) -> str | None:
    """Who holds the exclusive lock on `path` ("pid P on HOST"), or None when nobody does. It asks with a
    shared lock, held for an instant: a process that takes the lock meanwhile waits that instant."""
    try:
        f = open(path)
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
        return None
