"""The scenario library (scenarios/*.yaml) as files: each one parses with its manifests, is named
after its file and opens with the comment that explains it, and every CNI and pod-network mode
netsim builds has a scenario to bring up.  Pure: no kernel (tests/e2e/test_scenarios.py brings
each one up and runs `netsim check`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.model.scenario import is_selector_ref, load_scenario, manifest_objects, segment_of

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))

# (cni, mode): flannel's backend for canal and flannel, the IPPool's (ipipMode, vxlanMode) for calico.
MODES = {
    ("canal", "vxlan"), ("canal", "host-gw"), ("flannel", "vxlan"),
    ("calico", ("Always", "Never")),       # IPIP everywhere (Calico's default)
    ("calico", ("CrossSubnet", "Never")),  # IPIP between segments only
    ("calico", ("Never", "Always")),       # VXLAN everywhere, no BGP
    ("calico", ("Never", "CrossSubnet")),  # VXLAN between segments only, no BGP
    ("calico", ("Never", "Never")),        # BGP routes, no encapsulation
}


def _mode(scn) -> tuple:
    net = scn.networking
    if net.cni == "calico":
        return net.cni, (net.calico.ipipMode, net.calico.vxlanMode)
    return net.cni, net.backend


def _load(path: Path):
    return load_scenario(path)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_parses_with_its_manifests(path):
    scn = _load(path)
    assert scn.name == path.stem, f"{path.name}: name {scn.name!r}; a scenario is named after its file"
    objects = manifest_objects(scn, path.parent)
    for obj in objects:
        assert obj.get("kind") and obj.get("metadata", {}).get("name"), f"{path.name}: an object without kind or name"
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# {scn.name}: "), f"{path.name} opens with `# {scn.name}: what it shows`, not {first!r}"


def test_every_cni_and_mode_has_a_scenario():
    have: dict[tuple, list[str]] = {}
    for path in SCENARIOS:
        have.setdefault(_mode(_load(path)), []).append(path.name)
    missing = sorted(map(str, MODES - set(have)))
    assert not missing, f"no scenario in scenarios/ for {missing}; have {have}"


def _calico_scenarios():
    return [p for p in SCENARIOS if _load(p).networking.cni == "calico"]


def _pod_nodes(scn, path: Path) -> dict[str, str]:
    """pod/NS/NAME -> the node its manifest pins it to."""
    out = {}
    for obj in manifest_objects(scn, path.parent):
        if obj.get("kind") == "Pod" and obj.get("spec", {}).get("nodeName"):
            ns = obj["metadata"].get("namespace", "default")
            out[f"pod/{ns}/{obj['metadata']['name']}"] = obj["spec"]["nodeName"]
    return out


@pytest.mark.parametrize("path", _calico_scenarios(), ids=lambda p: p.stem)
def test_calico_scenarios_say_what_crossing_segments_does(path):
    """Each Calico mode's scenario spans two segments and expects pod-to-pod across them to work,
    except with no encapsulation (Never), where the router has no pod routes and it fails."""
    scn = _load(path)
    segments = scn.networking.segments
    assert len(segments) >= 2, f"{path.name}: one segment shows nothing of CrossSubnet vs Never"
    node_segment = {n.name: segment_of(n, segments) for n in scn.nodes}
    pods = _pod_nodes(scn, path)
    calico = scn.networking.calico
    crossing = [e for e in scn.expect
                if not is_selector_ref(e.from_) and e.from_ in pods and e.to in pods
                and node_segment[pods[e.from_]] != node_segment[pods[e.to]]
                and "locked" not in e.to]
    assert crossing, f"{path.name}: no pod-to-pod expectation between segments"
    wanted = "deny" if (calico.ipipMode, calico.vxlanMode) == ("Never", "Never") else "allow"
    for e in crossing:
        assert e.expect == wanted, f"{path.name}: {e.from_} -> {e.to} across segments should be {wanted}"
    same = [e for e in scn.expect if e.from_ in pods and e.to in pods and pods[e.from_] != pods[e.to]
            and node_segment[pods[e.from_]] == node_segment[pods[e.to]] and "locked" not in e.to]
    assert same and all(e.expect == "allow" for e in same), f"{path.name}: pods of one segment must reach each other"


@pytest.mark.parametrize("path", _calico_scenarios(), ids=lambda p: p.stem)
def test_calico_scenarios_check_that_policy_is_enforced(path):
    scn = _load(path)
    kinds = {o["kind"] for o in manifest_objects(scn, path.parent)}
    assert "NetworkPolicy" in kinds
    assert any(e.expect == "deny" and "locked" in e.to for e in scn.expect), \
        f"{path.name}: no expectation that a NetworkPolicy denies something"


def test_manifests_directory_files_are_all_used():
    used = set()
    for path in SCENARIOS:
        scn = _load(path)
        used |= {(path.parent / m).resolve() for m in scn.manifests if isinstance(m, str)}
    unused = [p.name for p in sorted((REPO / "scenarios" / "manifests").glob("*.yaml")) if p.resolve() not in used]
    assert not unused, f"scenarios/manifests/ files no scenario uses: {unused}"
