"""bridge, loopback and flannel plugins: real namespaces, links and packets; differential
against the reference plugins in /usr/lib/cni."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from netsim.cni.server import PluginServer
from tests.cni_util import OURS, REFERENCE

needs_reference = pytest.mark.skipif(not (REFERENCE / "bridge").exists(),
                                     reason="reference plugins not installed (containernetworking-plugins)")


def bridge_conf(box, subnet="10.22.0.0/24", **extra):
    return {"cniVersion": "1.0.0", "name": "testnet", "type": "bridge", "bridge": "cni0",
            "isDefaultGateway": True, **extra,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(box.tmp / "ipam")}}


def ping(box, netns_path, target) -> bool:
    return box.in_netns(netns_path, "ping", "-c1", "-W1", target, check=False).returncode == 0


def container_state(box, path):
    addrs = json.loads(box.in_netns(path, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    routes = json.loads(box.in_netns(path, "ip", "-j", "route").stdout)
    return addrs, routes


def test_add_wires_a_container_to_the_bridge(cni_sandbox):
    box = cni_sandbox
    a, b = box.container("a"), box.container("b")
    conf = bridge_conf(box, hairpinMode=True)
    ra = box.call("bridge", "ADD", conf, container_id="ctr-a", netns=a)
    rb = box.call("bridge", "ADD", conf, container_id="ctr-b", netns=b)
    assert ra.rc == 0 and rb.rc == 0, ra.raw + rb.raw
    res = ra.out
    assert [i["name"] for i in res["interfaces"]][0::2] == ["cni0", "eth0"]
    assert res["interfaces"][2]["sandbox"] == a
    assert res["ips"] == [{"address": "10.22.0.2/24", "gateway": "10.22.0.1", "interface": 2}]
    assert {"dst": "0.0.0.0/0", "gw": "10.22.0.1"} in res["routes"]
    host_veth = res["interfaces"][1]["name"]
    link = json.loads(box.in_runtime("ip", "-d", "-j", "link", "show", host_veth))[0]
    assert link["master"] == "cni0" and link["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert "10.22.0.1/24" in box.in_runtime("ip", "-o", "addr", "show", "cni0")
    addrs, routes = container_state(box, a)
    assert addrs["address"] == res["interfaces"][2]["mac"]
    assert any(r["dst"] == "default" and r["gateway"] == "10.22.0.1" for r in routes)
    assert ping(box, a, "10.22.0.3") and ping(box, b, "10.22.0.2") and ping(box, a, "10.22.0.1")
    assert box.in_runtime("cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"


def test_add_fails_cleanly_when_the_interface_exists(cni_sandbox):
    box = cni_sandbox
    a = box.container("a")
    conf = bridge_conf(box)
    assert box.call("bridge", "ADD", conf, container_id="ctr-a", netns=a).rc == 0
    again = box.call("bridge", "ADD", conf, container_id="ctr-x", netns=a)
    assert again.rc != 0 and "already exists" in again.error["msg"]
    held = sorted(f for f in os.listdir(box.tmp / "ipam" / "testnet") if f[0].isdigit())
    assert held == ["10.22.0.2"], "the failed ADD must not keep an address"
    assert len([link for link in box.in_runtime("ip", "-o", "link").splitlines() if "veth" in link]) == 1


def test_del_is_idempotent_and_survives_a_missing_netns(cni_sandbox):
    box = cni_sandbox
    a = box.container("a")
    conf = bridge_conf(box)
    assert box.call("bridge", "ADD", conf, container_id="ctr-a", netns=a).rc == 0
    assert box.call("bridge", "DEL", conf, container_id="ctr-a", netns=a).rc == 0
    assert box.in_netns(a, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert box.call("bridge", "DEL", conf, container_id="ctr-a", netns=a).rc == 0
    assert box.call("bridge", "DEL", conf, container_id="ctr-a", netns="/run/netns/gone-away").rc == 0
    assert box.call("bridge", "DEL", conf, container_id="ctr-a").rc == 0  # no CNI_NETNS at all
    assert not [f for f in os.listdir(box.tmp / "ipam" / "testnet") if f[0].isdigit()]


def test_check_passes_then_fails_when_state_drifts(cni_sandbox):
    box = cni_sandbox
    a = box.container("a")
    conf = bridge_conf(box)
    add = box.call("bridge", "ADD", conf, container_id="ctr-a", netns=a)
    prev = dict(conf, prevResult=add.out)
    assert box.call("bridge", "CHECK", prev, container_id="ctr-a", netns=a).rc == 0
    box.in_netns(a, "ip", "addr", "flush", "dev", "eth0")
    bad = box.call("bridge", "CHECK", prev, container_id="ctr-a", netns=a)
    assert bad.rc != 0 and "10.22.0.2/24" in bad.error["msg"]


def test_bridge_options(cni_sandbox):
    box = cni_sandbox
    a, b = box.container("a"), box.container("b")
    conf = bridge_conf(box, mtu=1400, promiscMode=True, ipMasq=True, runtimeConfig={"mac": "02:00:00:00:00:aa"})
    res = box.call("bridge", "ADD", conf, container_id="ctr-a", netns=a)
    assert res.rc == 0, res.raw
    addrs, _ = container_state(box, a)
    assert addrs["mtu"] == 1400 and addrs["address"] == "02:00:00:00:00:aa"
    assert "PROMISC" in box.in_runtime("ip", "link", "show", "cni0")
    nat = box.in_runtime("iptables-save", "-t", "nat")
    assert '-A POSTROUTING -s 10.22.0.2/32 -m comment --comment "name: \\"testnet\\" id: \\"ctr-a\\""' in nat
    assert "MASQUERADE" in nat
    assert box.call("bridge", "DEL", conf, container_id="ctr-a", netns=a).rc == 0
    assert "CNI-" not in box.in_runtime("iptables-save", "-t", "nat")
    # forceAddress: a different address in the gateway's subnet is an error, or replaced.
    box.in_runtime("ip", "addr", "del", "10.22.0.1/24", "dev", "cni0")
    box.in_runtime("ip", "addr", "add", "10.22.0.9/24", "dev", "cni0")
    clash = box.call("bridge", "ADD", bridge_conf(box), container_id="ctr-b", netns=b)
    assert clash.rc != 0 and "forceAddress" in clash.error.get("details", "")
    forced = box.call("bridge", "ADD", bridge_conf(box, forceAddress=True), container_id="ctr-b", netns=b)
    assert forced.rc == 0, forced.raw
    have = box.in_runtime("ip", "-o", "addr", "show", "cni0")
    assert "10.22.0.1/24" in have and "10.22.0.9" not in have


def test_results_follow_the_asked_version(cni_sandbox):
    box = cni_sandbox
    a = box.container("a")
    res = box.call("bridge", "ADD", dict(bridge_conf(box), cniVersion="0.3.1"), container_id="ctr-a", netns=a)
    assert res.out["cniVersion"] == "0.3.1" and res.out["ips"][0]["version"] == "4"
    b = box.container("b")
    res = box.call("bridge", "ADD", dict(bridge_conf(box), cniVersion="1.1.0"), container_id="ctr-b", netns=b)
    assert res.out["cniVersion"] == "1.1.0" and "version" not in res.out["ips"][0]


def _normalised(result: dict) -> dict:
    out = json.loads(json.dumps(result))
    for iface in out["interfaces"]:
        iface.pop("mac", None)
        if iface["name"].startswith("veth"):
            iface["name"] = "veth*"
        iface["sandbox"] = "sandbox" if iface.get("sandbox") else None
    out["routes"] = sorted(out.get("routes", []), key=json.dumps)
    out.pop("dns", None)
    return out


@needs_reference
def test_same_result_and_kernel_state_as_the_reference(cni_sandbox):
    box = cni_sandbox
    ours_ns, ref_ns = box.container("ours"), box.container("ref")
    conf_ours = bridge_conf(box, subnet="10.30.0.0/24")
    conf_ref = dict(conf_ours, bridge="cni1", ipam=dict(conf_ours["ipam"], subnet="10.30.0.0/24",
                                                        dataDir=str(box.tmp / "ipam-ref")))
    conf_ours_copy = dict(conf_ours, ipam=dict(conf_ours["ipam"], dataDir=str(box.tmp / "ipam-ours")))
    ours = box.call("bridge", "ADD", conf_ours_copy, container_id="same", netns=ours_ns)
    ref = box.call(REFERENCE / "bridge", "ADD", conf_ref, container_id="same", netns=ref_ns)
    assert ours.rc == 0 and ref.rc == 0, ours.raw + ref.raw
    ref_norm = _normalised(ref.out)
    ref_norm["interfaces"][0]["name"] = "cni0"
    assert _normalised(ours.out) == ref_norm
    (oa, oroutes), (ra, rroutes) = container_state(box, ours_ns), container_state(box, ref_ns)
    assert [(i["local"], i["prefixlen"]) for i in oa["addr_info"] if i["family"] == "inet"] == \
           [(i["local"], i["prefixlen"]) for i in ra["addr_info"] if i["family"] == "inet"]
    assert oa["mtu"] == ra["mtu"]
    def route_set(routes):
        return sorted((r["dst"], r.get("gateway")) for r in routes)

    assert route_set(oroutes) == route_set(rroutes)
    # The reference plugin CHECKs what ours added, and each side deletes the other's attachment.
    prev = dict(conf_ours_copy, prevResult=ours.out)
    assert box.call(REFERENCE / "bridge", "CHECK", prev, container_id="same", netns=ours_ns,
                    cni_path=str(REFERENCE)).rc == 0
    assert box.call(REFERENCE / "bridge", "DEL", conf_ours_copy, container_id="same", netns=ours_ns,
                    cni_path=str(REFERENCE)).rc == 0
    assert box.in_netns(ours_ns, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert box.call("bridge", "DEL", conf_ref, container_id="same", netns=ref_ns).rc == 0
    assert box.in_netns(ref_ns, "ip", "link", "show", "eth0", check=False).returncode != 0
    for d in ("ipam-ours", "ipam-ref"):
        assert not [f for f in os.listdir(box.tmp / d / "testnet") if f[0].isdigit()]


def test_loopback(cni_sandbox):
    box = cni_sandbox
    a = box.container("a")
    conf = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
    res = box.call("loopback", "ADD", conf, container_id="ctr-a", netns=a)
    assert res.rc == 0 and res.out["interfaces"][0]["name"] == "lo"
    assert "UP" in box.in_netns(a, "ip", "link", "show", "lo").stdout.split(">")[0]
    assert box.in_netns(a, "ping", "-c1", "-W1", "127.0.0.1", check=False).returncode == 0
    assert box.call("loopback", "CHECK", dict(conf, prevResult=res.out), container_id="ctr-a", netns=a).rc == 0
    assert box.call("loopback", "DEL", conf, container_id="ctr-a", netns=a).rc == 0
    assert box.call("loopback", "DEL", conf, container_id="ctr-a", netns="/run/netns/gone").rc == 0


def write_subnet_env(box, subnet="10.244.3.1/24", network="10.244.0.0/16", mtu=1450):
    path = box.tmp / "subnet.env"
    path.write_text(f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={subnet}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n")
    return path


def flannel_conf(box, subnet_env):
    return {"cniVersion": "1.1.0", "name": "cbr0", "type": "flannel", "subnetFile": str(subnet_env),
            "dataDir": str(box.tmp / "flannel"), "ipam": {"dataDir": str(box.tmp / "ipam")},
            "delegate": {"hairpinMode": True, "isDefaultGateway": True}}


def test_flannel_delegates_to_bridge_and_host_local(cni_sandbox):
    box = cni_sandbox
    a = box.container("a")
    conf = flannel_conf(box, write_subnet_env(box))
    res = box.call("flannel", "ADD", conf, container_id="pod-a", netns=a)
    assert res.rc == 0, res.raw
    assert res.out["ips"][0]["address"] == "10.244.3.2/24" and res.out["ips"][0]["gateway"] == "10.244.3.1"
    saved = json.loads((box.tmp / "flannel" / "pod-a").read_text())
    assert saved["type"] == "bridge" and saved["mtu"] == 1450 and saved["ipMasq"] is False
    assert saved["ipam"]["ranges"] == [[{"subnet": "10.244.3.0/24"}]]
    addrs, routes = container_state(box, a)
    assert addrs["mtu"] == 1450
    assert any(r["dst"] == "10.244.0.0/16" and r.get("gateway") == "10.244.3.1" for r in routes)
    assert box.call("flannel", "CHECK", dict(conf, prevResult=res.out), container_id="pod-a", netns=a).rc == 0
    assert box.call("flannel", "DEL", conf, container_id="pod-a", netns=a).rc == 0
    assert not (box.tmp / "flannel" / "pod-a").exists()
    assert box.call("flannel", "DEL", conf, container_id="pod-a", netns=a).rc == 0


def test_flannel_without_subnet_env_is_not_available(cni_sandbox):
    box = cni_sandbox
    a = box.container("a")
    conf = flannel_conf(box, box.tmp / "missing.env")
    status = box.call("flannel", "STATUS", conf, ifname="")
    assert status.rc != 0 and status.error["code"] == 50
    add = box.call("flannel", "ADD", conf, container_id="pod-a", netns=a)
    assert add.rc != 0 and add.error["code"] == 50
    conf = flannel_conf(box, write_subnet_env(box))
    assert box.call("flannel", "STATUS", conf, ifname="").rc == 0


def host_links() -> set[str]:
    return {line.split(":")[1].strip() for line in subprocess.run(
        ["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()}


def test_plugin_server_runs_calls_in_the_callers_namespace(cni_sandbox):
    """The shim hands the call to a server in another namespace (this test process is in the
    host's); the work still lands in the caller's runtime namespace."""
    box = cni_sandbox
    host_links_before = host_links()
    server = PluginServer(str(box.tmp / "cni.sock")).start()
    try:
        conf = bridge_conf(box)
        env = {"NETSIM_CNI_SOCKET": server.path}
        paths = [box.container(f"c{i}") for i in range(50)]
        with ThreadPoolExecutor(max_workers=10) as pool:
            calls = list(pool.map(lambda ip: box.call("bridge", "ADD", conf, container_id=f"ctr{ip[0]}",
                                                      netns=ip[1], env=env), enumerate(paths)))
        assert all(c.rc == 0 for c in calls), [c.raw for c in calls if c.rc]
        ips = {c.out["ips"][0]["address"] for c in calls}
        assert len(ips) == 50, "50 parallel ADDs must get 50 different addresses"
        assert server.calls >= 50
        assert "cni0" in box.in_runtime("ip", "-o", "link", "show", "cni0")
        assert host_links() == host_links_before, "nothing may land in the host's namespace"
        assert ping(box, paths[0], calls[49].out["ips"][0]["address"].split("/")[0])
    finally:
        server.stop()
    assert not os.path.exists(server.path)


def test_cnitool_like_runtime(cni_sandbox, tmp_path):
    """netsim cni add/check/del/status/gc with a conflist, as cnitool is used."""
    box = cni_sandbox
    a, b = box.container("a"), box.container("b")
    confdir = tmp_path / "net.d"
    confdir.mkdir()
    plugins = flannel_conf(box, write_subnet_env(box))
    plugins = {k: v for k, v in plugins.items() if k not in ("cniVersion", "name")}
    (confdir / "10-flannel.conflist").write_text(json.dumps({
        "cniVersion": "1.1.0", "name": "cbr0",
        "plugins": [plugins, {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    env = {**os.environ, "NETCONFPATH": str(confdir), "CNI_PATH": str(OURS)}
    cache = str(tmp_path / "cache")

    def cni(*args):
        netsim = os.path.join(os.path.dirname(sys.executable), "netsim")
        return subprocess.run(["ip", "netns", "exec", box.runtime, netsim, "cni", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    add = cni("add", "cbr0", a, "--cache-dir", cache)
    assert add.returncode == 0, add.stderr
    assert json.loads(add.stdout)["ips"][0]["address"] == "10.244.3.2/24"
    assert cni("add", "cbr0", b, "--cache-dir", cache).returncode == 0
    assert len(os.listdir(os.path.join(cache, "results"))) == 2
    assert cni("check", "cbr0", a, "--cache-dir", cache).returncode == 0
    assert cni("status", "cbr0").returncode == 0
    gc = cni("gc", "cbr0", a, "--cache-dir", cache)  # keep a, collect b
    assert gc.returncode == 0 and "removed" in gc.stdout, gc.stderr
    assert box.in_netns(b, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert box.in_netns(a, "ip", "link", "show", "eth0", check=False).returncode == 0
    assert cni("del", "cbr0", a, "--cache-dir", cache).returncode == 0
    assert os.listdir(os.path.join(cache, "results")) == []
    held = [f for f in os.listdir(box.tmp / "ipam" / "cbr0") if f[0].isdigit()]
    assert held == []
    bad = cni("add", "nosuchnet", a, "--cache-dir", cache)
    assert bad.returncode != 0 and "nosuchnet" in bad.stderr


def test_compiled_launcher_with_and_without_a_server(cni_sandbox):
    """cni_plugins/bin/* (built from netsim/cni/shim.c) hand the call to the server, or, with
    none listening, exec the Python plugin with the same stdin."""
    from netsim.cni import runtime

    box = cni_sandbox
    built = box.tmp / "bin"
    runtime.install(str(built))
    assert (built / "bridge").read_bytes()[:4] == b"\x7fELF", "expected the compiled launcher (is cc installed?)"
    conf = bridge_conf(box)
    server = PluginServer(str(box.tmp / "cni.sock")).start()
    try:
        a, b = box.container("a"), box.container("b")
        served = box.call(built / "bridge", "ADD", conf, container_id="ctr-a", netns=a,
                          env={"NETSIM_CNI_SOCKET": server.path})
        assert served.rc == 0 and server.calls == 1, served.raw
    finally:
        server.stop()
    alone = box.call(built / "bridge", "ADD", conf, container_id="ctr-b", netns=b,  # stopped: nothing listens
                     env={"NETSIM_CNI_SOCKET": server.path, "NETSIM_CNI_NO_STANDALONE": "1"})
    assert alone.rc == 0, alone.raw
    assert {served.out["ips"][0]["address"], alone.out["ips"][0]["address"]} == {"10.22.0.2/24", "10.22.0.3/24"}
    err = box.call(built / "bridge", "ADD", conf, container_id="-bad", netns=a, env={"NETSIM_CNI_NO_STANDALONE": "1"})
    assert err.rc != 0 and err.error["code"] == 4
    assert ping(box, a, "10.22.0.3")


@pytest.mark.parametrize("launcher", ["compiled", "script"])
def test_launcher_starts_the_standalone_server(cni_sandbox, monkeypatch, launcher):
    """With no agent's server the launcher (compiled, or the Python script written when there
    is no C compiler) starts the standalone one (netsim/cni/standalone.py) on its first call and
    hands it every later call; stop_all ends it and removes its files."""
    from netsim.cni import runtime, standalone

    box = cni_sandbox
    built = box.tmp / "bin"
    if launcher == "script":
        monkeypatch.setattr(runtime, "_compile_shim", lambda _output: False)
    runtime.install(str(built))
    assert ((built / "bridge").read_bytes()[:2] == b"#!") == (launcher == "script")
    key = runtime.install_key()
    standalone.stop_all(key=key)  # a server left by an earlier run of this install
    conf = bridge_conf(box)
    try:
        a, b = box.container("a"), box.container("b")
        first = box.call(built / "bridge", "ADD", conf, container_id="ctr-a", netns=a)
        assert first.rc == 0, first.raw + first.stderr
        pids = standalone.running(key)
        assert len(pids) == 1, "the first call did not leave a standalone server"
        assert os.path.exists(standalone.socket_path(key))
        second = box.call(built / "bridge", "ADD", conf, container_id="ctr-b", netns=b)
        assert second.rc == 0, second.raw + second.stderr
        assert standalone.running(key) == pids
        assert ping(box, a, second.out["ips"][0]["address"].split("/")[0])
        gone = box.call(built / "bridge", "DEL", conf, container_id="ctr-b", netns=b)
        assert gone.rc == 0, gone.raw
        assert box.in_netns(b, "ip", "link", "show", "eth0", check=False).returncode != 0
    finally:
        stopped = standalone.stop_all(key=key)
    assert stopped == pids
    assert not os.path.exists(standalone.socket_path(key))
    assert standalone.running(key) == []


def test_status_and_unsupported_fields(cni_sandbox):
    box = cni_sandbox
    a = box.container("a")
    conf = dict(bridge_conf(box), cniVersion="1.1.0")
    assert box.call("bridge", "STATUS", conf, ifname="").rc == 0  # no bridge yet: ADD will make it
    assert box.call("bridge", "ADD", conf, container_id="ctr-a", netns=a).rc == 0
    assert box.call("bridge", "STATUS", conf, ifname="").rc == 0
    box.in_runtime("ip", "link", "set", "cni0", "down")
    down = box.call("bridge", "STATUS", conf, ifname="")
    assert down.rc != 0 and down.error["code"] == 51
    vlan = box.call("bridge", "ADD", dict(conf, vlan=100), container_id="ctr-b", netns=box.container("b"))
    assert vlan.rc != 0 and vlan.error["code"] == 2 and "vlan" in vlan.error["msg"]
    mtu = box.call("bridge", "ADD", dict(conf, mtu="big"), container_id="ctr-c", netns=box.container("c"))
    assert mtu.rc != 0 and mtu.error["code"] == 7
