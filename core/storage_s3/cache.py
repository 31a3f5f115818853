"""The local read cache of an object store: copies of stored objects, bounded least-recently-used.

A copy's modification time is its last use (:meth:`ReadCache.touch`), so the bound needs no index
that could disagree with the folder after a crash.
"""

from __future__ import annotations

import os
from pathlib import Path

# The folders under the cache root that hold copies of stored objects (tmp/ and work/ do not).
CACHED_TOPS = ("models", "datasets", "jobs")


class ReadCache:
    """Copies under ``root``'s :data:`CACHED_TOPS` folders, kept within ``max_bytes``."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes

    @staticmethod
    def touch(path: Path) -> None:
        """Marks a copy as just used: evicted last."""
        os.utime(path)

    def total_bytes(self) -> int:
        """The size of every cached copy together."""
        return sum(size for _, size, _ in self.entries())

    def entries(self) -> list[tuple[float, int, Path]]:
        """``(last used, size, path)`` of every cached copy."""
        found = []
        for top in CACHED_TOPS:
            for path in (self.root / top).rglob("*"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if path.is_file():
                    found.append((st.st_mtime, st.st_size, path))
        return found

    def evict(self, *, keep: Path) -> None:
        """Deletes the least recently used copies but ``keep`` until the cache is within ``max_bytes``.

        A copy another thread is reading stays readable (an unlinked file lives while it is open);
        one handed out but not yet opened could go, which only an upload or fetch of more than the
        whole bound in between can cause.
        """
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            _remove_empty_parents(path.parent, self.root)


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            return
        folder = folder.parent
