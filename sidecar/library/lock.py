"""One writer per library: an exclusive, non-blocking lock on a file in it.
The operating system drops the lock when the process dies, so a crash never
leaves a library locked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from sidecar.errors import LibraryInUse

if os.name == "nt":
    import msvcrt  # type: ignore[import-not-found,unused-ignore]

    def _try_lock(handle: IO[bytes]) -> bool:
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
            return True
        except OSError:
            return False

else:
    import fcntl

    def _try_lock(handle: IO[bytes]) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False


class LibraryLock:
    def __init__(self, folder: Path) -> None:
        self.path = folder / "library.lock"
        self._handle: IO[bytes] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+b")
        if not _try_lock(handle):
            handle.close()
            raise LibraryInUse(
                f"library {self.path.parent} is in use by another liveryid process",
                {"library": str(self.path.parent)},
            )
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()).encode())
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the lock
            self._handle = None
