"""Struct member offsets of the *running* kernel, read from its BTF (/sys/kernel/btf/vmlinux).

bcc compiles BPF programs against the distribution's kernel headers, which may describe another
kernel (seen: Debian's 6.1 headers on a 6.18 kernel, where task_struct.tgid moved from offset
2420 to 1268). The recorder therefore never dereferences kernel structs through the headers: it
passes the offsets found here as -D macros and reads with bpf_probe_read_kernel(ptr + OFF).

Dependency-free reader of the BTF type section (format: Documentation/bpf/btf.rst).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

from vmatrace.base.errors import VmatraceError

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

_KIND_STRUCT = 4
_KIND_UNION = 5
# Bytes that follow the 12-byte common header, by kind (vlen-dependent ones are callables).
# (fixed bytes, bytes per vlen member)
_EXTRA: dict[int, tuple[int, int]] = {
    1: (4, 0),  # INT
    3: (12, 0),  # ARRAY
    4: (0, 12),  # STRUCT
    5: (0, 12),  # UNION
    6: (0, 8),  # ENUM
    13: (0, 8),  # FUNC_PROTO
    14: (4, 0),  # VAR
    15: (0, 12),  # DATASEC
    17: (4, 0),  # DECL_TAG
    19: (0, 12),  # ENUM64
}


class BtfError(VmatraceError):
    pass


class _Btf:
    def __init__(self, data: bytes) -> None:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", data, 0
        )
        if magic != 0xEB9F:
            raise BtfError("not a BTF file (bad magic)")
        self.strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self.types: list[tuple[int, int, int, int, int]] = [(0, 0, 0, 0, 0)]  # id 0 = void
        # (kind, name_off, vlen, size_or_type, members_offset)
        self.kflag: list[bool] = [False]
        self.data = data
        pos = hdr_len + type_off
        end = pos + type_len
        while pos < end:
            name_off, info, size_type = struct.unpack_from("<III", data, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            fixed, per = _EXTRA.get(kind, (0, 0))
            n = fixed + per * vlen
            self.types.append((kind, name_off, vlen, size_type, pos + 12))
            self.kflag.append(bool(info >> 31))
            pos += 12 + n

    def name(self, off: int) -> str:
        e = self.strings.index(b"\0", off)
        return self.strings[off:e].decode()

    def find_struct(self, name: str) -> int:
        for tid, (kind, name_off, vlen, _s, _m) in enumerate(self.types):
            if kind == _KIND_STRUCT and vlen > 0 and self.name(name_off) == name:
                return tid
        raise BtfError(f"struct {name} not found in kernel BTF")

    def _resolve(self, tid: int) -> int:
        # Skip typedef/volatile/const/restrict/type_tag to the underlying type.
        while self.types[tid][0] in (8, 9, 10, 11, 18):
            tid = self.types[tid][3]
        return tid

    def member_offset(self, tid: int, member: str) -> int | None:
        """Byte offset of `member` in struct/union `tid`, descending into anonymous members."""
        _kind, _n, vlen, _s, moff = self.types[tid]
        for i in range(vlen):
            name_off, mtype, offset = struct.unpack_from("<III", self.data, moff + 12 * i)
            bits = offset & 0xFFFFFF if self.kflag[tid] else offset
            mname = self.name(name_off)
            if mname == member:
                return bits // 8
            if mname == "":
                sub = self._resolve(mtype)
                if self.types[sub][0] in (_KIND_STRUCT, _KIND_UNION):
                    inner = self.member_offset(sub, member)
                    if inner is not None:
                        return bits // 8 + inner
        return None


@lru_cache(maxsize=1)
def _load(path: str) -> _Btf:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BtfError(
            f"cannot read kernel BTF {path} ({e.strerror}); a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed"
        ) from e
    return _Btf(data)


def struct_offsets(struct_name: str, members: list[str], *, path: Path = VMLINUX_BTF) -> dict[str, int]:
    """Byte offsets of `members` of `struct struct_name` in the running kernel (BtfError if missing)."""
    btf = _load(str(path))
    tid = btf.find_struct(struct_name)
    out: dict[str, int] = {}
    for m in members:
        off = btf.member_offset(tid, m)
        if off is None:
            raise BtfError(f"struct {struct_name} has no member {m} in kernel BTF")
        out[m] = off
    return out
