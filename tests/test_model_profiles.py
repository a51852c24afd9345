"""Kernel profiles: version mapping, commit-cited fields, the live profile above the model."""

from __future__ import annotations

import dataclasses

import pytest

from replay import PROFILE_NAMES, AddressSpace, AnonRule, CloseRule, get_profile
from replay import profiles as profiles_mod


@pytest.mark.parametrize(
    ("version", "name"),
    [
        ("6.1", "6.1"), ("6.1.128", "6.1"), ("6.5", "6.1"), ("6.6", "6.6"), ("6.6.70", "6.6"),
        ("6.11", "6.6"), ("6.12", "6.12"), ("6.12.107", "6.12"), ("6.13", "6.15"),
        ("6.15.2", "6.15"), ("6.16", "6.16"), ("6.17", "6.17"), ("6.18", "6.18.0"),
        ("6.18.3", "6.18.0"), ("6.18.7", "6.18.0"), ("6.18.8", "6.18.8"),
        ("6.18.15", "6.18.8"), ("6.18.44", "6.19"), ("6.18.44-fc-v669", "6.19"),
        ("6.18.20", "6.18.8"), ("6.18.21", "6.18.21"), ("6.18.43", "6.18.21"),
        ("6.18.60", "6.19"), ("6.19", "6.19"), ("6.19.1", "6.19.0"), ("6.19.10", "6.19.0"),
        ("6.19.11", "6.19"), ("6.19.14", "6.19"), ("7.0", "6.19"),
        ("7.1.13", "6.19"), ("7.2", "7.2"), ("7.3.4", "7.2"), ("v6.12", "6.12"),
    ],
)
def test_get_profile_maps_versions(version: str, name: str) -> None:
    assert get_profile(version).name == name


def test_profile_names_for_live_detection() -> None:
    assert set(PROFILE_NAMES) == {"6.1", "6.6", "6.12", "6.15", "6.16", "6.17", "6.18.0",
                                  "6.18.8", "6.18.21", "6.19.0", "6.19", "7.2"}
    for n in PROFILE_NAMES:
        assert get_profile(n).name == n


def test_6_16_has_the_old_mremap_check_order_and_clears_the_dontunmap_source_account() -> None:
    p616, p617 = get_profile("6.16.12"), get_profile("6.17")
    diff = {f.name for f in dataclasses.fields(p616)
            if getattr(p616, f.name) != getattr(p617, f.name)}
    assert diff == {"name", "mremap_multi_vma", "mremap_checks_first", "dontunmap_clears_account",
                    "unmergeable_clears_sealed", "mseal_stale_curr_start"}
    assert p616.dontunmap_clears_account and not p616.mremap_checks_first
    assert not get_profile("6.15").dontunmap_clears_account
    assert not get_profile("6.18.0").dontunmap_clears_account


def test_sticky_backport_on_6_18_from_the_release_table() -> None:
    """6.18.44 (this machine's kernel) carries the sticky-flag backport; 6.18.15 (qemu) does not."""
    assert get_profile("6.18.44").sticky_flags and get_profile("6.18.44").name == "6.19"
    assert not get_profile("6.18.15").sticky_flags
    assert not get_profile("6.18.44", sticky=False).sticky_flags
    p = get_profile("6.18.3", sticky=True)
    assert p.sticky_flags and p.guard_install_sets_maybe_guard and p.name == "6.19"
    table = {b.what: b for b in profiles_mod.STABLE_BACKPORTS}
    assert all(b.last_without < b.first for b in table.values())


def test_unknown_stable_release_warns_once(capsys: pytest.CaptureFixture[str]) -> None:
    profiles_mod._WARNED.discard("6.18.30")
    assert not get_profile("6.18.30").sticky_flags
    get_profile("6.18.30")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("vmatrace: warning: kernel 6.18.30: not known")


def test_release_newer_than_any_profile_warns(capsys: pytest.CaptureFixture[str]) -> None:
    profiles_mod._WARNED.discard("7.4.1")
    assert get_profile("7.4.1").name == get_profile("7.3").name == "7.2"
    assert "newer than any profile" in capsys.readouterr().err
    get_profile("7.3.4")
    assert capsys.readouterr().err == ""


def test_mseal_stale_curr_start_from_6_17_until_the_fix_and_its_backports() -> None:
    """6c2da14ae1e0 (6.17) until 2697dd8ae721 (7.0; stable 6.18.21 and 6.19.11)."""
    stale = {v: get_profile(v).mseal_stale_curr_start for v in (
        "6.16.12", "6.17.13", "6.18.5", "6.18.15", "6.18.20", "6.18.21", "6.18.44", "6.19.10",
        "6.19.11", "6.19.14", "7.0", "7.3.4")}
    assert stale == {"6.16.12": False, "6.17.13": True, "6.18.5": True, "6.18.15": True,
                     "6.18.20": True, "6.18.21": False, "6.18.44": False, "6.19.10": True,
                     "6.19.11": False, "6.19.14": False, "7.0": False, "7.3.4": False}
    for a, b in (("6.18.8", "6.18.21"), ("6.19.0", "6.19")):
        pa, pb = get_profile(a), get_profile(b)
        assert {f.name for f in dataclasses.fields(pa) if getattr(pa, f.name) != getattr(
            pb, f.name)} == {"name", "mseal_stale_curr_start"}


def test_7_2_handles_the_dontunmap_source_as_6_12_did() -> None:
    p71, p72, p612 = get_profile("7.1"), get_profile("7.2"), get_profile("6.12")
    diff = {f.name for f in dataclasses.fields(p71) if getattr(p71, f.name) != getattr(p72, f.name)}
    assert diff == {"name", "dontunmap_unlocks_whole_source", "dontunmap_copy_merges"}
    assert p72.dontunmap_copy_merges == p612.dontunmap_copy_merges == "not_source"
    assert not p72.dontunmap_unlocks_whole_source and not p612.dontunmap_unlocks_whole_source


def test_map_stack_nohugepage_where_thp_is_configured() -> None:
    def layout(kernel: str, thp: str) -> int:
        mm = AddressSpace(kernel, thp=thp)
        a = mm.mmap(0, 2 << 12, 3, 0x22)
        mm.mmap(a + (2 << 12), 2 << 12, 3, 0x22 | 0x10 | 0x20000)  # MAP_FIXED | MAP_STACK
        return len(mm.vmas())

    assert layout("6.12", "never") == 2 and layout("6.1", "never") == 1
    assert layout("6.12", "unconfigured") == 1


@pytest.mark.parametrize("bad", ["", "6", "six.one", "6.x", "5.15", "latest", "6.1.2.3"])
def test_get_profile_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match=r"kernel|predates"):
        get_profile(bad)


def test_era_fields() -> None:
    assert get_profile("6.15").anon_rule is AnonRule.OLD
    assert get_profile("6.16").anon_rule is AnonRule.NEW
    assert get_profile("6.1").close_rule is CloseRule.TARGET
    assert get_profile("6.6").close_rule is CloseRule.REMOVABLE
    assert get_profile("6.12").close_rule is CloseRule.DELETION
    assert not get_profile("6.18.7").copied_from_propagation
    assert get_profile("6.18.8").copied_from_propagation
    assert get_profile("6.19").sticky_flags and not get_profile("6.18.8").sticky_flags
    assert not get_profile("6.12").guard_install_available
    assert get_profile("6.13").guard_install_available
    assert not get_profile("6.6").mseal_available and get_profile("6.12").mseal_available


def test_every_field_cites_its_origin() -> None:
    """Each KernelProfile field carries a comment naming its commit or evidence."""
    with open(profiles_mod.__file__) as f:
        src = f.read()
    body = src[src.index("class KernelProfile"):src.index("_BASE = KernelProfile(")]
    for fld in dataclasses.fields(profiles_mod.KernelProfile):
        if fld.name in ("name", "anon_rule", "close_rule"):
            continue
        line = next(i for i, ln in enumerate(body.splitlines()) if ln.strip().startswith(
            f"{fld.name}:"))
        above = "\n".join(body.splitlines()[max(0, line - 6):line])
        assert "#" in above and any(w in above for w in ("commit", "checked", "INFERRED",
                                                          "patch", "since", "Since")), fld.name


def test_live_is_resolved_above_the_model() -> None:
    """The model never probes the kernel itself (that would import the oracle, above it)."""
    with pytest.raises(ValueError, match=r"replay\.live\.live_profile"):
        AddressSpace(kernel="live")
    with pytest.raises(ValueError, match=r"replay\.live"):
        get_profile("live")


@pytest.mark.live
def test_live_address_space_has_the_probed_profile_and_configuration() -> None:
    import replay.live as live

    name, findings = live.detect_live_profile()
    mm = live.live_address_space(explain=False)
    assert mm.profile.name == name and mm.profile_findings == findings
    assert mm.soft_dirty is live.own_soft_dirty() and mm.pkeys is live.cpu_has_pku()
    assert live.live_profile() == get_profile(name)
    assert live.live_address_space(soft_dirty=True).soft_dirty is True
