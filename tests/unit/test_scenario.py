"""Scenario parsing and validation: pure, no kernel."""

import ipaddress
from pathlib import Path

import pytest

from netsim.fabric import plan_addresses
from netsim.model.names import IFNAMSIZ, cluster_of_netns, ifname, netns_name
from netsim.model.scenario import ScenarioError, load_scenario

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """\
apiVersion: netsim/v1alpha1
kind: Scenario
name: mini
nodes:
  - name: cp
    role: control-plane
  - name: w1
"""


def write(tmp_path, text, name="scn.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert str(path) in message, "the error must name the file"
    return info.value.problems, message


def test_basic_scenario_loads_with_the_documented_shape():
    scn = load_scenario(REPO / "scenarios" / "basic.yaml")
    assert scn.name == "basic"
    assert [(n.name, n.role) for n in scn.nodes] == [
        ("control-plane", "control-plane"), ("worker1", "worker"), ("worker2", "worker")]
    assert [h.name for h in scn.externalHosts] == ["client"]
    net = scn.networking
    assert (str(net.underlaySubnet), str(net.podSubnet), str(net.serviceSubnet)) == (
        "192.168.56.0/24", "10.244.0.0/16", "10.96.0.0/12")
    assert (net.backend, net.kubeProxyMode, str(net.loadBalancerPool)) == ("vxlan", "iptables", "198.51.100.0/28")
    assert scn.manifests == ["manifests/web.yaml"]
    assert scn.expect[0].from_ == "pod/default/client" and scn.expect[0].port == 80


def test_defaults_fill_what_a_minimal_file_leaves_out(tmp_path):
    scn = load_scenario(write(tmp_path, MINIMAL))
    assert str(scn.networking.underlaySubnet) == "192.168.56.0/24"
    assert scn.networking.backend == "vxlan" and scn.networking.underlayMTU == 1500


@pytest.mark.parametrize("edit, field, words", [
    (("10.244.0.0/16", "10.244.0.0/33"), "networking.podSubnet", ["10.244.0.0/33", "fix:", "CIDR"]),
    (("backend: vxlan", "backend: geneve"), "networking.backend", ["geneve", "host-gw"]),
    (("backend: vxlan", "backnd: vxlan"), "networking.backnd", ["unknown field", "backend"]),
    (("role: control-plane", "role: master"), "nodes[0].role", ["master", "control-plane"]),
    (("name: w1", "name: W_1"), "nodes[1].name", ["W_1", "DNS label"]),
    (("kubeProxyMode: iptables", "kubeProxyMode: userspace"), "networking.kubeProxyMode", ["ipvs"]),
])
def test_a_bad_field_is_named_with_its_path_and_a_fix(tmp_path, edit, field, words):
    text = MINIMAL + "networking:\n  podSubnet: 10.244.0.0/16\n  backend: vxlan\n  kubeProxyMode: iptables\n"
    found, message = problems(tmp_path, text.replace(*edit))
    assert field in [p for p, _ in found], message
    for w in words:
        assert w in message, message


def test_whole_file_rules_are_explained(tmp_path):
    _, msg = problems(tmp_path, MINIMAL.replace("name: w1", "name: cp"))
    assert "'cp' is used twice" in msg
    _, msg = problems(tmp_path, MINIMAL.replace("    role: control-plane\n", ""))
    assert "role: control-plane" in msg
    _, msg = problems(tmp_path, MINIMAL + "networking:\n  podSubnet: 192.168.0.0/16\n")
    assert "overlaps" in msg and "podSubnet" in msg
    _, msg = problems(tmp_path, MINIMAL + "manifests: [missing.yaml]\n")
    assert "manifests[0]" in msg and "missing.yaml" in msg
    _, msg = problems(tmp_path, MINIMAL.replace("name: w1", "name: w1\n    ip: 10.0.0.1"))
    assert "not a host address of underlaySubnet" in msg
    _, msg = problems(tmp_path, MINIMAL.replace("netsim/v1alpha1", "v1"))
    assert "apiVersion" in msg and "netsim/v1alpha1" in msg


def test_yaml_syntax_errors_give_line_and_column(tmp_path):
    _, msg = problems(tmp_path, MINIMAL + "  - name: [unclosed\n")
    assert "line 9" in msg and "not valid YAML" in msg


def test_a_subnet_too_small_for_its_members_is_rejected(tmp_path):
    _, msg = problems(tmp_path, MINIMAL + "networking:\n  underlaySubnet: 10.9.0.0/30\n")
    assert "room for 1 members" in msg


def test_addresses_keep_explicit_ones_and_never_renumber_hosts():
    subnet = ipaddress.IPv4Network("192.168.56.0/24")
    ips = plan_addresses(subnet, [("a", None), ("b", "192.168.56.3"), ("c", None)], [("h", None)])
    assert ips == {"a": "192.168.56.2", "b": "192.168.56.3", "c": "192.168.56.4", "h": "192.168.56.254"}
    more = plan_addresses(subnet, [("a", None), ("b", "192.168.56.3"), ("c", None), ("d", None)], [("h", None)])
    assert more["h"] == "192.168.56.254" and more["d"] == "192.168.56.5"


def test_interface_names_fit_the_kernel_limit_and_stay_distinct():
    assert ifname("worker1") == "worker1"
    long_a, long_b = ifname("a-very-long-node-name-1"), ifname("a-very-long-node-name-2")
    assert len(long_a) <= IFNAMSIZ and len(long_b) <= IFNAMSIZ and long_a != long_b


def test_namespace_names_belong_to_exactly_one_cluster():
    assert cluster_of_netns(netns_name("a", "w1")) == "a"
    assert cluster_of_netns(netns_name("a-b", "w1")) == "a-b"
    assert not netns_name("a-b", "w1").startswith("nsim.a.")
    assert cluster_of_netns("cni-1234") is None
