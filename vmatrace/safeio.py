"""Safe output creation for a tool that often runs as root.

Rules: never follow a symlink at the final path component, never overwrite unless asked, create
files 0600 / directories 0700, and hand them to the invoking user (``SUDO_UID``/``SUDO_GID``) so a
trace recorded with ``sudo`` belongs to the person who asked for it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from vmatrace.errors import VmatraceError


def invoking_user() -> tuple[int, int]:
    """(uid, gid) of the user who invoked us: SUDO_UID/SUDO_GID when run through sudo."""
    uid, gid = os.getuid(), os.getgid()
    try:
        if "SUDO_UID" in os.environ:
            uid = int(os.environ["SUDO_UID"])
            gid = int(os.environ.get("SUDO_GID", uid))
    except ValueError:
        pass
    return uid, gid


def _chown(fd: int) -> None:
    uid, gid = invoking_user()
    if os.geteuid() == 0 and (uid, gid) != (0, 0):
        os.fchown(fd, uid, gid)


def safe_create(path: str | os.PathLike[str], mode: int = 0o600, *, force: bool = False,
                dir_fd: int | None = None) -> int:
    """Create ``path`` for writing and return its fd.

    O_NOFOLLOW refuses a symlink at the last component; without ``force`` O_EXCL refuses any existing
    file. With ``force`` an existing regular file is truncated, never a symlink or a device.
    """
    p = os.fspath(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_TRUNC if force else os.O_EXCL
    try:
        fd = os.open(p, flags, mode, dir_fd=dir_fd)
    except FileExistsError:
        raise VmatraceError(f"{p} exists (use --force to overwrite)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise VmatraceError(f"{p} is a symlink: refusing to write through it") from None
        raise VmatraceError(f"cannot create {p}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise VmatraceError(f"{p} is not a regular file")
    os.fchmod(fd, mode)
    _chown(fd)
    return fd


def safe_mkdir(path: str | os.PathLike[str], mode: int = 0o700, *, force: bool = False) -> int:
    """Create directory ``path`` (not following symlinks) and return an O_DIRECTORY fd to it.

    Without ``force`` an existing path is refused. With ``force`` an existing real directory is
    emptied of the files a trace holds; a symlink is always refused.
    """
    p = Path(path)
    try:
        os.mkdir(p, mode)
    except FileExistsError:
        if p.is_symlink():
            raise VmatraceError(f"{p} is a symlink: refusing to write through it") from None
        if not force:
            raise VmatraceError(f"{p} exists (use --force to overwrite)") from None
        if not p.is_dir():
            raise VmatraceError(f"{p} exists and is not a directory") from None
        _empty_trace_dir(p)
    except OSError as e:
        raise VmatraceError(f"cannot create {p}: {e.strerror}") from None
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    os.fchmod(fd, mode)
    _chown(fd)
    return fd


def _empty_trace_dir(p: Path) -> None:
    """Remove what an earlier trace left (only files and one level of table subdirectories)."""
    for child in p.iterdir():
        if child.is_symlink() or child.is_file():
            child.unlink()
        elif child.is_dir():
            for f in child.iterdir():
                if f.is_symlink() or f.is_file():
                    f.unlink()
            with contextlib.suppress(OSError):
                child.rmdir()


def write_bytes_safely(path: str | os.PathLike[str], data: bytes, *, force: bool = False) -> None:
    fd = safe_create(path, force=force)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
