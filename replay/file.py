"""fs/file.c, fs/open.c: the file descriptor table (open, memfd_create, dup, close)."""

from __future__ import annotations

import errno as E

from replay.internal import MmCore, err
from replay.mm_types import OpenFile, new_id


class FileMixin(MmCore):
    """The fd table: an fd names an open file description (struct file)."""

    def open_file(self, path: str, *, writable: bool = True, readable: bool = True,
                  close_hook: bool = False, shmem: bool = False, dev: str = "fe:00",
                  ino: int | None = None, size: int | None = None) -> int:
        """open(2): a new open file description; returns the lowest free fd >= 3. ``size``:
        the file's size in pages (None: large enough), for faults beyond EOF (SIGBUS)."""
        if ino is None:
            ino = self._inodes.setdefault(path, 1000 + len(self._inodes))
        f = OpenFile(path, dev=dev, ino=ino, readable=readable, writable=writable,
                     has_close_hook=close_hook, shmem=shmem, size=size)
        return self._install_fd(f)

    def memfd_create(self, name: str, *, size: int | None = None) -> int:
        """memfd_create(2): a new shmem file (``size`` in pages, as after ftruncate())."""
        return self.open_file(f"/memfd:{name} (deleted)", shmem=True, dev="00:01",
                              ino=new_id(), size=size)

    def _install_fd(self, f: OpenFile) -> int:
        fd = 3
        while fd in self.files:
            fd += 1
        self.files[fd] = f
        return fd

    def dup(self, fd: int) -> int:
        """dup(2): the new fd shares the open file description."""
        f = self.files.get(fd)
        if f is None:
            raise err(E.EBADF, f"fd {fd}")
        return self._install_fd(f)

    def close(self, fd: int) -> None:
        """close(2): mappings keep their file."""
        if self.files.pop(fd, None) is None:
            raise err(E.EBADF, f"fd {fd}")
