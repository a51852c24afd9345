"""The kernel behaviours of tests/kernel_behaviours.py on every pinned kernel under qemu and on the
live kernel: the kernel does what the check says for its release, and the model (with the
profile the release picks) agrees with the kernel on every step."""

from __future__ import annotations

import re

import pytest

from replay.oracle import compare, run_live, run_model
from replay.oracle.core import Sequence
from replay.oracle.execute import QEMU_KERNELS
from tests.conftest import need, need_cc
from tests.kernel_behaviours import BEHAVIOURS
from tests.qemu_batches import boot

NAMES = list(BEHAVIOURS)


def _release(upstream: str) -> tuple[int, int, int]:
    """(major, minor, stable patch level) of an upstream version "X.Y[.Z]"."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", upstream)
    assert m, upstream
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


@pytest.mark.qemu
@pytest.mark.parametrize("kernel", QEMU_KERNELS)
@pytest.mark.parametrize("name", NAMES)
def test_kernel_behaviour_on_qemu_kernel(kernel: str, name: str) -> None:
    b = boot(kernel)
    need(not b.error, b.error)
    ops, check = BEHAVIOURS[name]
    kern = b.behaviours[name]
    assert kern.status == "ok", kern.status
    check(_release(b.profile), kern)
    s = Sequence(name, ops)
    (mod,) = run_model(b.profile, [s], options=b.options())
    d = compare(s, kern, mod, label=f"qemu-{kernel}/model:{b.profile}")
    if d is not None:
        pytest.fail(d.format(), pytrace=False)


@pytest.mark.live
def test_kernel_behaviours_on_the_live_kernel() -> None:
    import platform

    need_cc()
    seqs = [Sequence(n, ops) for n, (ops, _) in BEHAVIOURS.items()]
    kres = run_live(seqs)
    rel = _release(platform.release().split("-")[0])
    bad = []
    for s, k in zip(seqs, kres, strict=True):
        BEHAVIOURS[s.name][1](rel, k)
        (m,) = run_model("live", [s])
        d = compare(s, k, m, label="live/model:live")
        if d is not None:
            bad.append(d.format())
    if bad:
        pytest.fail("\n\n".join(bad), pytrace=False)
