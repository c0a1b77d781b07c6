"""Planning a routed underlay (networking.underlaySubnets), without a kernel: which segment and
address each member gets, the bridges' names, the state file (older files read as one segment),
and flannel's host-gw limit across segments (the warning at `up`, the routes it cannot have)."""

import ipaddress
import json

import pytest

from netsim.fabric import Cluster
from netsim.fabric.cluster import plan_addresses, plan_members
from netsim.model import names
from netsim.model.scenario import host_gw_problem, parse_scenario, scenario_warnings
from netsim.model.state import ClusterState
from netsim.node import overlay

S1, S2 = ipaddress.IPv4Network("192.168.56.0/24"), ipaddress.IPv4Network("192.168.57.0/24")


def test_members_go_to_their_subnet_else_the_one_holding_their_ip_else_the_first():
    plan = plan_members([S1, S2], [("cp", "node", None, None), ("w3", "node", None, "192.168.57.0/24"),
                                   ("w4", "node", "192.168.57.9", None), ("w1", "node", None, None),
                                   ("ext", "host", None, "192.168.57.0/24"), ("client", "host", None, None)])
    assert plan == {"cp": ("192.168.56.2", S1), "w1": ("192.168.56.3", S1), "client": ("192.168.56.254", S1),
                    "w3": ("192.168.57.2", S2), "w4": ("192.168.57.9", S2), "ext": ("192.168.57.254", S2)}


def test_one_segment_plans_exactly_as_before():
    wanted = [("cp", "node", None, None), ("w1", "node", "192.168.56.10", None), ("c", "host", None, None)]
    old = plan_addresses(S1, [("cp", None), ("w1", "192.168.56.10")], [("c", None)])
    assert {n: ip for n, (ip, _seg) in plan_members([S1], wanted).items()} == old


@pytest.mark.parametrize("member, message", [
    (("w", "node", None, "10.0.0.0/24"), "w: subnet 10.0.0.0/24 is not one of the underlay's segments "
                                         "(192.168.56.0/24, 192.168.57.0/24); fix:"),
    (("w", "node", "10.1.2.3", None), "w: ip 10.1.2.3 is not a host address of underlay segment 192.168.56.0/24"),
    (("w", "node", "192.168.56.7", "192.168.57.0/24"), "w: ip 192.168.56.7 is not a host address of underlay "
                                                       "segment 192.168.57.0/24"),
    (("w", "host", "192.168.57.1", None), "w: ip 192.168.57.1 is the underlay gateway of 192.168.57.0/24"),
])
def test_a_member_that_fits_no_segment_is_refused_by_name_with_the_fix(member, message):
    with pytest.raises(ValueError) as exc:
        plan_members([S1, S2], [member])
    assert message in str(exc.value)


def test_a_refused_member_leaves_the_cluster_as_it_was():
    c = Cluster("x", segments=[str(S1), str(S2)])
    c.add_node("cp", role="control-plane")
    with pytest.raises(ValueError):
        c.add_node("w9", subnet="10.9.0.0/24")
    assert list(c.members) == ["cp"]
    w = c.add_node("w9", subnet=str(S2))
    assert (w.ip, w.subnet, w.cidr, c.gateway_for(w), c.bridge_of(w)) == (
        "192.168.57.2", "192.168.57.0/24", "192.168.57.2/24", "192.168.57.1", "br-underlay1")


def test_the_first_segment_keeps_the_bridge_name_a_one_segment_underlay_always_had():
    assert [names.underlay_bridge(i) for i in range(3)] == ["br-underlay", "br-underlay1", "br-underlay2"]
    assert all(len(names.underlay_bridge(i)) <= names.IFNAMSIZ for i in range(100))


def test_the_scenarios_segments_reach_the_cluster():
    scn = parse_scenario({"name": "s", "networking": {"underlaySubnets": [str(S1), str(S2)]},
                          "nodes": [{"name": "cp", "role": "control-plane"}, {"name": "w3", "subnet": str(S2)},
                                    {"name": "w4", "ip": "192.168.57.20"}],
                          "externalHosts": [{"name": "ext", "subnet": str(S2)}]})
    c = Cluster.from_scenario(scn)
    assert c.segments == [S1, S2] and c.subnet == S1 and c.gateway == "192.168.56.1"
    assert {n: (m.ip, m.subnet) for n, m in c.members.items()} == {
        "cp": ("192.168.56.2", str(S1)), "w3": ("192.168.57.2", str(S2)), "w4": ("192.168.57.20", str(S2)),
        "ext": ("192.168.57.254", str(S2))}


OLD_STATE = {  # cluster.json as netsim wrote it before segments
    "name": "old", "phase": "up", "updated": 1.0, "source": None, "store": "/run/netsim/old/store.db", "join": None,
    "scenario": None,
    "underlay": {"subnet": "192.168.56.0/24", "gateway": "192.168.56.1", "mtu": 1500, "netns": "nsim.old._underlay",
                 "bridge": "br-underlay"},
    "members": [{"name": "cp", "kind": "node", "ip": "192.168.56.2", "netns": "nsim.old.cp", "uplink": "cp",
                 "role": "control-plane", "labels": {}}],
}


def test_a_state_file_from_before_segments_reads_as_one_segment_holding_every_member():
    st = ClusterState.model_validate_json(json.dumps(OLD_STATE))
    [seg] = st.underlay.segments
    assert (seg.subnet, seg.gateway, seg.bridge) == ("192.168.56.0/24", "192.168.56.1", "br-underlay")
    assert st.members[0].subnet == "192.168.56.0/24" and st.members[0].cidr == "192.168.56.2/24"
    assert st.underlay.segment(None) is seg and st.underlay.segment("192.168.56.0/24") is seg
    # And what is written now reads back the same.
    again = ClusterState.model_validate_json(json.dumps(st.model_dump(mode="json")))
    assert again == st


def _scenario(backend: str, subnets: dict[str, str | None]):
    nodes = [{"name": n, **({"subnet": s} if s else {}), **({"role": "control-plane"} if i == 0 else {})}
             for i, (n, s) in enumerate(subnets.items())]
    return parse_scenario({"name": "s", "nodes": nodes,
                           "networking": {"underlaySubnets": [str(S1), str(S2)], "backend": backend}})


def test_up_warns_when_host_gw_nodes_span_segments_naming_them_and_the_fix():
    [warning] = scenario_warnings(_scenario("host-gw", {"cp": None, "w1": None, "w3": str(S2)}))
    assert "networking.backend host-gw" in warning
    assert "cp, w1 on 192.168.56.0/24; w3 on 192.168.57.0/24" in warning
    assert "fix: use backend: vxlan" in warning and "one segment" in warning
    assert scenario_warnings(_scenario("vxlan", {"cp": None, "w3": str(S2)})) == []
    # Segments with no node on the second: host-gw works.
    assert scenario_warnings(_scenario("host-gw", {"cp": None, "w1": None})) == []
    assert host_gw_problem("host-gw", {"a": str(S1), "b": str(S1)}) is None


def _lease(i: int, ip: str) -> overlay.Lease:
    return overlay.Lease(f"10.244.{i}.0/24", ip, overlay.vtep_mac(f"n{i}"))


def test_host_gw_programs_routes_only_to_next_hops_on_the_nodes_own_segment():
    remotes = [_lease(2, "192.168.56.3"), _lease(3, "192.168.57.2")]
    backend = overlay.Backend("host-gw")
    routes, neigh, fdb = overlay._plan(backend, "192.168.56.2", 24, 2, None, ipaddress.ip_network("10.244.0.0/16"),
                                       ipaddress.ip_network("10.244.1.0/24"), remotes)
    assert routes == {"10.244.2.0/24": ("192.168.56.3", 2, False)} and not neigh and not fdb
    assert overlay.off_link(backend, "192.168.56.2", 24, remotes) == [remotes[1]]
    assert overlay.off_link(overlay.Backend("vxlan"), "192.168.56.2", 24, remotes) == []


def test_direct_routing_uses_each_nodes_own_segment():
    remotes = [_lease(2, "192.168.56.3"), _lease(3, "192.168.57.2")]
    routes, neigh, fdb = overlay._plan(overlay.Backend("vxlan", direct_routing=True), "192.168.57.9", 24, 2, 7,
                                       ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("10.244.9.0/24"),
                                       remotes)
    assert routes == {"10.244.2.0/24": ("10.244.2.0", 7, True), "10.244.3.0/24": ("192.168.57.2", 2, False)}
    assert set(neigh) == {"10.244.2.0"} and fdb == {(overlay.vtep_mac("n2"), "192.168.56.3")}


def test_up_says_so_before_building_anything(tmp_path):
    from tests.conftest import run_netsim

    scenario = tmp_path / "s.yaml"
    scenario.write_text("nodes: [{name: cp, role: control-plane}, {name: w3, subnet: 192.168.57.0/24}]\n"
                        "networking: {underlaySubnets: [192.168.56.0/24, 192.168.57.0/24], backend: host-gw}\n")
    # A refused --store stops `up` right after the scenario is read: nothing is built, as root or not.
    r = run_netsim("up", str(scenario), "--store", "nowhere", env={"NETSIM_STATE_DIR": str(tmp_path / "state")})
    assert r.returncode == 2 and "nothing was created" in r.stderr
    assert "warning: networking.backend host-gw: the nodes are on 2 underlay segments (cp on 192.168.56.0/24; " \
           "w3 on 192.168.57.0/24)" in r.stderr, r.stderr
