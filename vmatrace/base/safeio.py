"""Safe output creation for a tool that often runs as root.

Rules: never follow a symlink at the final path component, never overwrite unless asked, never
write through a FIFO, device or hard link, create files 0600 / directories 0700, and hand them to
the invoking user (``SUDO_UID``/``SUDO_GID``) so a trace recorded with ``sudo`` belongs to the
person who asked for it.
"""

from __future__ import annotations

import errno
import os
import stat

from vmatrace.base.errors import VmatraceError


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


def chown_to_invoker(fd: int) -> None:
    """Give an fd we created to the invoking user (only meaningful as root)."""
    uid, gid = invoking_user()
    if os.geteuid() == 0 and (uid, gid) != (0, 0):
        os.fchown(fd, uid, gid)


def _oserror(p: str, e: OSError) -> VmatraceError:
    if e.errno == errno.ELOOP:
        return VmatraceError(f"{p} is a symlink: refusing to write through it")
    if e.errno == errno.ENXIO:
        return VmatraceError(f"{p} is a FIFO or socket: refusing to write to it")
    return VmatraceError(f"cannot create {p}: {e.strerror}")


def safe_create(path: str | os.PathLike[str], mode: int = 0o600, *, force: bool = False,
                dir_fd: int | None = None) -> int:
    """Create ``path`` for writing and return its fd.

    O_NOFOLLOW refuses a symlink at the last component; without ``force`` O_EXCL refuses any existing
    file. With ``force`` an existing file is truncated only after fstat() shows a regular file with
    no other hard link (O_NONBLOCK keeps a FIFO from blocking the open).
    """
    p = os.fspath(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    if not force:
        flags |= os.O_EXCL
    try:
        fd = os.open(p, flags, mode, dir_fd=dir_fd)
    except FileExistsError:
        raise VmatraceError(f"{p} exists (use --force to overwrite)") from None
    except OSError as e:
        raise _oserror(p, e) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VmatraceError(f"{p} is not a regular file: refusing to write to it")
        if st.st_nlink > 1:
            raise VmatraceError(f"{p} has other hard links: refusing to overwrite it")
        os.ftruncate(fd, 0)
        os.fchmod(fd, mode)
        chown_to_invoker(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def safe_mkdir(path: str | os.PathLike[str], mode: int = 0o700, *, exist_ok: bool = False) -> tuple[int, bool]:
    """Create directory ``path`` and return (an O_DIRECTORY fd to it, whether it already existed).

    A symlink is always refused. An existing directory is accepted only with ``exist_ok``; the
    caller decides, through the fd, whether its content may be replaced.
    """
    p = os.fspath(path)
    existed = False
    try:
        os.mkdir(p, mode)
    except FileExistsError:
        if not exist_ok:
            raise VmatraceError(f"{p} exists (use --force to overwrite)") from None
        existed = True
    except OSError as e:
        raise VmatraceError(f"cannot create {p}: {e.strerror}") from None
    try:
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            what = "a symlink" if os.path.islink(p) else "not a directory"
            raise VmatraceError(f"{p} is {what}: refusing to write there") from None
        raise VmatraceError(f"cannot open {p}: {e.strerror}") from None
    if not existed:
        os.fchmod(fd, mode)
        chown_to_invoker(fd)
    return fd, existed
