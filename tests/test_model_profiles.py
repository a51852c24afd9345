"""Kernel profiles: version mapping, commit-cited fields, kernel="live"."""

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
        ("6.18.44", "6.18.8"), ("6.18.44-fc-v669", "6.18.8"), ("6.19", "6.19"),
        ("6.19.1", "6.19"), ("7.0", "6.19"), ("v6.12", "6.12"),
    ],
)
def test_get_profile_maps_versions(version: str, name: str) -> None:
    assert get_profile(version).name == name


def test_profile_names_for_live_detection() -> None:
    assert set(PROFILE_NAMES) == {"6.1", "6.6", "6.12", "6.15", "6.16", "6.18.0", "6.18.8",
                                  "6.19"}
    for n in PROFILE_NAMES:
        assert get_profile(n).name == n


def test_6_17_is_a_6_16_era_profile() -> None:
    p617, p616 = get_profile("6.17"), get_profile("6.16")
    diff = {f.name for f in dataclasses.fields(p616)
            if getattr(p616, f.name) != getattr(p617, f.name)}
    assert diff == {"name", "mremap_multi_vma"}


def test_sticky_backport_on_6_18() -> None:
    assert get_profile("6.18.44").sticky_flags is False
    p = get_profile("6.18.44", sticky=True)
    assert p.sticky_flags and p.guard_install_sets_maybe_guard and p.name == "6.19"


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


def test_live_without_detector_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import replay.live as live

    monkeypatch.delattr(live, "detect_live_profile", raising=False)
    with pytest.raises(RuntimeError, match="detect_live_profile"):
        AddressSpace(kernel="live")


def test_live_uses_the_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    import replay.live as live

    monkeypatch.setattr(live, "detect_live_profile",
                        lambda: ("6.18.0", ["L1: merged -> NEW"]), raising=False)
    mm = AddressSpace(kernel="live")
    assert mm.profile.name == "6.18.0"
    assert mm.profile_findings == ["L1: merged -> NEW"]
