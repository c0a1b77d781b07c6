"""netsim.fabric.requirements: which networking choices ask what of the machine, and the messages
that name the scenario field and the fix.  The kernel probe itself runs for real in
tests/e2e/test_calico_modes.py (an IPIP scenario on a kernel without ipip)."""

from __future__ import annotations

import pytest

from netsim.fabric import requirements
from netsim.model.scenario import Scenario


def _scenario(cni: str, **calico) -> Scenario:
    net: dict = {"cni": cni}
    if calico:
        net["calico"] = calico
    return Scenario.model_validate({"apiVersion": "netsim/v1alpha1", "kind": "Scenario", "name": "r",
                                    "nodes": [{"name": "n1", "role": "control-plane"}], "networking": net})


@pytest.fixture
def machine(monkeypatch):
    have = {"ipip": True, "bird": True}
    monkeypatch.setattr(requirements, "link_kind_supported", lambda _cluster, kind: have[kind])
    monkeypatch.setattr(requirements.shutil, "which", lambda prog: "/usr/sbin/bird" if have[prog] else None)
    return have


def test_flannel_and_canal_ask_for_nothing(machine):
    machine.update(ipip=False, bird=False)
    assert requirements.unmet(_scenario("canal"), "r") == []
    assert requirements.unmet(_scenario("flannel"), "r") == []


def test_ipip_needs_the_kernel_module(machine):
    machine["ipip"] = False
    (msg,) = requirements.unmet(_scenario("calico", ipipMode="Always"), "r")
    assert msg.startswith("networking.calico.ipipMode: Always needs the kernel's IPIP tunnel")
    assert "fix: set ipipMode: Never and vxlanMode: Always" in msg
    assert requirements.unmet(_scenario("calico", ipipMode="Never", vxlanMode="Always"), "r") == []


def test_bgp_needs_bird_and_vxlan_does_not(machine):
    machine["bird"] = False
    (msg,) = requirements.unmet(_scenario("calico", ipipMode="Never", vxlanMode="Never"), "r")
    assert "needs BIRD" in msg and "apt-get install bird" in msg
    assert requirements.unmet(_scenario("calico", ipipMode="Never", vxlanMode="CrossSubnet"), "r") == []
    assert requirements.bird_needed(_scenario("calico", ipipMode="CrossSubnet"))
    assert not requirements.bird_needed(_scenario("canal"))
