"""The live recipes (replay/oracle/recipes.py): real kernels against the documented
New/Old columns (runner only), and the model against the real kernels and the columns.

* live kernel: expected New column (L20 only where it is safe, see replay/live.py);
* qemu 6.1 / 6.12: expected Old column, with the era overrides (L13b, L25);
* model kernel="live" vs the live kernel step by step, and final == New;
* model profile 6.15: final == Old column (6.15 era);
* model profiles 6.1 / 6.12 vs the qemu kernels step by step, and final == Old column.
One runner process / one qemu boot per kernel for all recipes (module-scoped fixtures).
"""

from __future__ import annotations

import functools

import pytest

from replay.oracle import compare, run_live, run_model
from replay.oracle.core import SeqResult
from replay.oracle.recipes import BY_ID, RECIPES, Recipe, final_flags, final_layout
from replay.profiles import get_profile
from tests.conftest import need, need_cc
from tests.kernels import NEW_ANON, QEMU_NEW_ANON, QEMU_OLD_ANON
from tests.qemu_batches import boot

IDS = [x.rid for x in RECIPES]


@functools.cache
def _live_info() -> tuple[bool, str]:
    from replay.live import probe_live

    info = probe_live()
    return info.mremap_faulted_safe, info.profile


def _runnable_live(x: Recipe) -> bool:
    return not x.unsafe_before_6188 or _live_info()[0]


@functools.cache
def _live_results() -> dict[str, SeqResult]:
    todo = [x for x in RECIPES if _runnable_live(x)]
    return {x.rid: res for x, res in zip(todo, run_live([x.sequence() for x in todo]), strict=True)}


def _need_live() -> None:
    need_cc()


def _live(x: Recipe) -> SeqResult:
    _need_live()
    if not _runnable_live(x):
        pytest.skip(f"{x.rid} is unsafe on this kernel (profile {_live_info()[1]}, mremap fix not provable)")
    return _live_results()[x.rid]


def _qemu(kernel: str, x: Recipe) -> SeqResult:
    b = boot(kernel)  # the recipes run in the kernel's one boot, before its fuzz batch
    need(not b.error, b.error)
    return b.recipes[x.rid]


# ---- runner only --------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.parametrize("rid", IDS)
def test_live_kernel_matches_new_column(rid: str) -> None:
    x = BY_ID[rid]
    res = _live(x)
    assert res.status == "ok"
    assert all(s.errno == 0 for s in res.steps), [(s.op, s.errno) for s in res.steps if s.errno]
    assert final_layout(res) == x.expected("new")
    flags = final_flags(res)
    for rng, want in x.flags_present.items():
        assert want <= flags[rng], f"{rid}: {rng} lacks {want - flags[rng]}"
    for rng, unwanted in x.flags_absent.items():
        assert not unwanted & flags[rng], f"{rid}: {rng} has {unwanted & flags[rng]}"


@pytest.mark.qemu
@pytest.mark.parametrize("kernel", QEMU_OLD_ANON)
@pytest.mark.parametrize("rid", IDS)
def test_old_kernel_matches_old_column(kernel: str, rid: str) -> None:
    x = BY_ID[rid]
    res = _qemu(kernel, x)
    assert res.status == "ok"
    assert final_layout(res) == x.expected(kernel)
    # the only expected failures on old kernels: guard regions (6.13+) and mseal (6.10+)
    errs = {(s.op.split()[0], s.errno) for s in res.steps if s.errno}
    allowed = {("madvise", 22)} | ({("mseal", 38)} if kernel == "6.1" else set())
    assert errs <= allowed


# ---- model ----------------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.parametrize("rid", IDS)
def test_model_live_matches_live_kernel(rid: str) -> None:
    x = BY_ID[rid]
    kern = _live(x)
    (mod,) = run_model("live", [x.sequence()])
    d = compare(x.sequence(), kern, mod, label="live/model:live")
    if d is not None:
        pytest.fail(d.format(), pytrace=False)
    assert final_layout(mod) == x.expected("new")


@pytest.mark.parametrize("rid", IDS)
def test_model_615_matches_old_column(rid: str) -> None:
    x = BY_ID[rid]
    (mod,) = run_model("6.15", [x.sequence()])
    assert mod.status == "ok", mod.steps[-1].note
    assert final_layout(mod) == x.expected("6.15")


@pytest.mark.parametrize("profile", NEW_ANON)
@pytest.mark.parametrize("rid", IDS)
def test_model_new_profiles_match_new_column(profile: str, rid: str) -> None:
    x = BY_ID[rid]
    (mod,) = run_model(profile, [x.sequence()])
    assert mod.status == "ok", mod.steps[-1].note
    if x.unsafe_before_6188 and not get_profile(profile).fork_check_copied_from:
        # 6.16 .. 6.18.7 merge in every L20 case, forked or not (the kernel's selftests mm/merge.c)
        assert final_layout(mod) == BY_ID[x.rid.replace("L20f", "L20")].expected("new")
    else:
        assert final_layout(mod) == x.expected("new")


@pytest.mark.qemu
@pytest.mark.parametrize("kernel", QEMU_OLD_ANON)
@pytest.mark.parametrize("rid", IDS)
def test_model_old_profiles_match_qemu_kernels(kernel: str, rid: str) -> None:
    x = BY_ID[rid]
    kern = _qemu(kernel, x)
    b = boot(kernel)
    (mod,) = run_model(b.profile, [x.sequence()], options=b.options())
    d = compare(x.sequence(), kern, mod, label=f"qemu-{kernel}/model:{b.profile}")
    if d is not None:
        pytest.fail(d.format(), pytrace=False)
    assert final_layout(mod) == x.expected(kernel)


@pytest.mark.qemu
@pytest.mark.parametrize("kernel", QEMU_NEW_ANON)
def test_model_matches_every_qemu_kernel_on_the_recipes(kernel: str) -> None:
    """Every recipe, step by step, on the kernels 6.16 .. 7.3 with the profile the guest's
    release picks; the final layout is the New column, except the L20 merges of 6.16 .. 6.18.7
    (the mremap anon_vma bug merges in the forked cases too)."""
    b = boot(kernel)
    need(not b.error, b.error)
    bad = []
    for x in RECIPES:
        kern = b.recipes[x.rid]
        assert kern.status == "ok", (x.rid, kern.status)
        (mod,) = run_model(b.profile, [x.sequence()], options=b.options())
        d = compare(x.sequence(), kern, mod, label=f"qemu-{kernel}/model:{b.profile}")
        if d is not None:
            bad.append(d.format())
        if x.unsafe_before_6188 and not get_profile(b.profile).copied_from_propagation:
            assert final_layout(kern) == BY_ID[x.rid.replace("L20f", "L20")].expected("new")
        else:
            assert final_layout(kern) == x.expected("new"), x.rid
    if bad:
        pytest.fail("\n\n".join(bad), pytrace=False)
