"""The calico and calico-ipam plugins exec'd as a runtime execs them, in namespaces the test
made, against netsim's real API server (TLS, the admin's client certificate from a kubeconfig
written as `netsim kubeconfig` writes it, a SQLite store) listening inside the "node"
namespace: the kernel state Calico's CNI plugin leaves (cali veth, proxy ARP, /32s, 169.254.1.1
routes, host routes and neighbours), IPAM blocks in the API, ADD/CHECK/DEL, a second block,
release, error JSON, and real packets between two pods through the node."""

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from aiohttp import web

from netsim import kernel
from netsim.api.store.sqlite import SQLiteStore
from netsim.apiserver import kubeconfig, pki
from netsim.apiserver.app import make_app
from netsim.apiserver.server import ssl_context
from netsim.cni import calico_ipam as ipam
from netsim.cni import runtime
from netsim.cni.server import PluginServer
from netsim.model import calico as model
from tests.cni_util import OURS

NODE = "worker1"
POOL = "10.77.0.0/16"
NODE_ADDRESS = "192.168.99.2/24"
GATEWAY_ADDRESS = "192.168.99.1/24"


class Api:
    """netsim's API server in a thread of this process, listening in the node namespace."""

    def __init__(self, box, block_size: int):
        self.box = box
        p = pki.ensure(pki.Paths(box.tmp / "pki"), pki.server_sans([], None))
        self.store = SQLiteStore(box.tmp / "store.db")
        # The node's uplink: eth0 into a namespace holding its default gateway, as on a netsim
        # node (proxy ARP answers for 169.254.1.1 only when the node has a route to it).
        uplink = box.container("uplink")
        with kernel.Namespace.open(box.runtime) as node, kernel.Namespace.at(uplink) as gw:
            with node.batch() as b:
                b.set_link("lo", up=True)
                b.add_veth("eth0", "eth0", gw, 1500)
                b.set_link("eth0", up=True)
            with gw.batch() as b:
                b.set_link("eth0", up=True)
                b.add_address(gw.index("eth0"), GATEWAY_ADDRESS)
            index = node.index("eth0")
            with node.batch() as b:
                b.add_address(index, NODE_ADDRESS)
            with node.batch() as b:
                b.replace_route("0.0.0.0/0", gateway=GATEWAY_ADDRESS.split("/")[0], oif=index)
        sock = kernel.socket_in(box.runtime, socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(make_app(self.store, "t", pki_paths=p))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start():
            await self.runner.setup()
            await web.SockSite(self.runner, sock, ssl_context=ssl_context(p)).start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.kubeconfig = box.tmp / "calico-kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig.standalone("t", f"https://127.0.0.1:{port}", p),
                                                  default_flow_style=False, sort_keys=False))
        self.kubeconfig.chmod(0o600)
        with self.client() as c:
            for obj in model.initial_objects(POOL, {"blockSize": block_size}):
                if obj["kind"] in ipam.PLURALS:
                    c.create(obj)

    @contextlib.contextmanager
    def client(self):
        """A KubeBlockStore whose connections are made from the node namespace."""
        with kernel.entered(kernel.netns_path(self.box.runtime)):
            c = ipam.KubeBlockStore(str(self.kubeconfig))
            try:
                yield c
            finally:
                c.close()

    def blocks(self) -> dict[str, dict]:
        with self.client() as c:
            return {b["spec"]["cidr"]: b["spec"] for b in c.list("IPAMBlock")}

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.store.close()


@pytest.fixture
def api(cni_sandbox, request):
    server = Api(cni_sandbox, getattr(request, "param", 26))
    yield server
    server.close()


def conf(api, **extra):
    return {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "mtu": 1480, "nodename": NODE,
            "datastore_type": "kubernetes", "kubernetes": {"kubeconfig": str(api.kubeconfig)},
            "ipam": {"type": "calico-ipam"}, **extra}


def pod_args(pod, namespace="default"):
    return {"CNI_ARGS": f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID=x"}


def add(box, api, pod, **extra):
    netns = box.container(pod)
    r = box.call("calico", "ADD", conf(api, **extra), container_id=f"ctr-{pod}", netns=netns, env=pod_args(pod))
    assert r.rc == 0, r.raw + r.stderr
    return netns, r.out


def ip_json(box, netns, *argv):
    out = box.in_netns(netns, "ip", "-j", *argv).stdout if netns else box.in_runtime("ip", "-j", *argv)
    return json.loads(out or "[]")


def test_add_check_del_leave_calicos_kernel_state(cni_sandbox, api):
    box = cni_sandbox
    netns, res = add(box, api, "client")
    veth = "cali" + hashlib.sha1(b"default.client").hexdigest()[:11]
    assert len(veth) == 15
    pod_ip = res["ips"][0]["address"].split("/")[0]
    assert res["ips"] == [{"address": f"{pod_ip}/32", "interface": 1}]
    assert res["interfaces"][0] == {"name": veth, "mac": "ee:ee:ee:ee:ee:ee"}
    assert res["interfaces"][1]["name"] == "eth0" and res["interfaces"][1]["sandbox"] == netns
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    # The node's end: MAC, up, no IPv4 address, Calico's sysctls.
    (host,) = ip_json(box, None, "addr", "show", veth)
    assert host["address"] == "ee:ee:ee:ee:ee:ee" and "UP" in host["flags"] and host["mtu"] == 1480
    assert not [a for a in host["addr_info"] if a["family"] == "inet"]
    for key, want in ((f"net/ipv4/conf/{veth}/proxy_arp", "1"), (f"net/ipv4/conf/{veth}/forwarding", "1"),
                      (f"net/ipv4/conf/{veth}/route_localnet", "1"), (f"net/ipv4/neigh/{veth}/proxy_delay", "0")):
        assert box.in_runtime("cat", f"/proc/sys/{key}").strip() == want, key
    # The pod's end: MTU, a /32, the two routes via 169.254.1.1.
    (eth0,) = ip_json(box, netns, "addr", "show", "eth0")
    assert eth0["mtu"] == 1480 and eth0["address"] == res["interfaces"][1]["mac"]
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] == [(pod_ip, 32)]
    routes = [line.strip() for line in box.in_netns(netns, "ip", "-4", "route").stdout.splitlines()]
    assert sorted(routes) == ["169.254.1.1 dev eth0 scope link", "default via 169.254.1.1 dev eth0"]
    # The node's route and permanent neighbour for the pod.
    assert box.in_runtime("ip", "-4", "route", "show", "dev", veth).strip() == f"{pod_ip} scope link metric 1024"
    neigh = box.in_runtime("ip", "neigh", "show", "dev", veth).strip()
    assert neigh == f"{pod_ip} lladdr {eth0['address']} PERMANENT"
    # IPAM: the address is in a block affine to the node, held by the container's handle.
    (cidr, block), = api.blocks().items()
    assert block["affinity"] == f"host:{NODE}"
    net = ipaddress.ip_network(cidr)
    ordinal = int(ipaddress.ip_address(pod_ip)) - int(net.network_address)
    attrs = block["attributes"][block["allocations"][ordinal]]
    assert attrs["handle_id"] == "k8s-pod-network.ctr-client"
    assert attrs["secondary"]["pod"] == "client" and attrs["secondary"]["node"] == NODE
    with api.client() as c:
        assert c.get("BlockAffinity", model.affinity_name(NODE, cidr))["spec"]["state"] == "confirmed"
        assert c.get("IPAMHandle", "k8s-pod-network.ctr-client")["spec"]["block"] == {cidr: 1}

    check = box.call("calico", "CHECK", conf(api, prevResult=res), container_id="ctr-client", netns=netns,
                     env=pod_args("client"))
    assert check.rc == 0, check.raw
    box.in_runtime("ip", "neigh", "del", pod_ip, "dev", veth)
    broken = box.call("calico", "CHECK", conf(api, prevResult=res), container_id="ctr-client", netns=netns,
                      env=pod_args("client"))
    assert broken.rc != 0 and "permanent neighbour" in broken.error["msg"], broken.raw

    delete = box.call("calico", "DEL", conf(api), container_id="ctr-client", netns=netns, env=pod_args("client"))
    assert delete.rc == 0, delete.raw
    assert box.in_netns(netns, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert veth not in box.in_runtime("ip", "-o", "link")
    assert pod_ip not in box.in_runtime("ip", "-4", "route")
    assert all(a is None for a in api.blocks()[cidr]["allocations"]), "DEL releases the address"
    with api.client() as c:
        assert c.get("IPAMHandle", "k8s-pod-network.ctr-client") is None
    again = box.call("calico", "DEL", conf(api), container_id="ctr-client", netns=netns, env=pod_args("client"))
    assert again.rc == 0, "DEL is idempotent"
    gone = box.call("calico", "DEL", conf(api), container_id="ctr-client", netns="/run/netns/gone-away")
    assert gone.rc == 0
    after = box.call("calico", "CHECK", conf(api, prevResult=res), container_id="ctr-client", netns=netns,
                     env=pod_args("client"))
    assert after.rc != 0 and after.error["code"] == 3


@pytest.mark.parametrize("api", [30], indirect=True)
def test_a_second_block_when_the_first_fills_and_del_releases(cni_sandbox, api):
    box = cni_sandbox
    pods = {f"p{i}": add(box, api, f"p{i}") for i in range(5)}
    ips = {pod: res["ips"][0]["address"].split("/")[0] for pod, (_, res) in pods.items()}
    assert len(set(ips.values())) == 5
    blocks = api.blocks()
    assert len(blocks) == 2 and {b["affinity"] for b in blocks.values()} == {f"host:{NODE}"}
    used = sorted(sum(a is not None for a in b["allocations"]) for b in blocks.values())
    assert used == [1, 4]
    for pod, ip in ips.items():
        veth = "cali" + hashlib.sha1(f"default.{pod}".encode()).hexdigest()[:11]
        assert box.in_runtime("ip", "-4", "route", "show", ip).strip() == f"{ip} dev {veth} scope link metric 1024"
    first = next(cidr for cidr, b in blocks.items() if all(a is not None for a in b["allocations"]))
    victim = next(pod for pod, ip in ips.items() if ipaddress.ip_address(ip) in
                  ipaddress.ip_network(first))
    netns = pods[victim][0]
    assert box.call("calico", "DEL", conf(api), container_id=f"ctr-{victim}", netns=netns,
                    env=pod_args(victim)).rc == 0
    assert sum(a is not None for a in api.blocks()[first]["allocations"]) == 3
    with api.client() as c:
        assert len(c.list("IPAMHandle")) == 4


def test_two_pods_ping_each_other_through_the_node(cni_sandbox, api):
    box = cni_sandbox
    a, ra = add(box, api, "a")
    b, rb = add(box, api, "b")
    ip_a, ip_b = (r["ips"][0]["address"].split("/")[0] for r in (ra, rb))
    for src, dst in ((a, ip_b), (b, ip_a), (a, NODE_ADDRESS.split("/")[0])):
        ping = box.in_netns(src, "ping", "-c1", "-W2", dst, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    # The pod's "gateway" was answered by the node's proxy ARP with the cali end's MAC.
    neigh = box.in_netns(a, "ip", "neigh", "show", "169.254.1.1").stdout
    assert "lladdr ee:ee:ee:ee:ee:ee" in neigh
    # The node forwarded them: its cali ends counted the packets.
    veth_b = "cali" + hashlib.sha1(b"default.b").hexdigest()[:11]
    (stats,) = ip_json(box, None, "-s", "link", "show", veth_b)
    assert stats["stats64"]["tx"]["packets"] >= 1 and stats["stats64"]["rx"]["packets"] >= 1
    assert "1 received" in box.in_runtime("ping", "-c1", "-W2", ip_a), "node to pod"


@pytest.mark.parametrize("api", [31], indirect=True)
def test_bad_netconf_and_exhaustion_give_the_specs_error_json(cni_sandbox, api):
    box = cni_sandbox
    netns = box.container("x")

    def call(c, **kw):
        return box.call("calico", "ADD", c, container_id="ctr-x", netns=netns, env=pod_args("x"), **kw)

    no_kube = conf(api)
    del no_kube["kubernetes"]
    for bad, code, words in ((no_kube, 7, "kubernetes.kubeconfig is required"),
                             (conf(api, mtu="big"), 7, "invalid mtu"),
                             (conf(api, datastore_type="etcdv3"), 2, "datastore_type"),
                             (conf(api, nodename=""), 7, "nodename"),
                             (conf(api, kubernetes={"kubeconfig": str(box.tmp / "none")}), 7, "kubeconfig"),
                             (conf(api, ipam={}), 7, "ipam.type")):
        r = call(bad)
        assert r.rc == 1 and r.out["code"] == code and words in r.out["msg"], r.raw
        assert r.out["cniVersion"] == "1.0.0"
    unreachable = box.tmp / "dead-kubeconfig"
    doc = yaml.safe_load(api.kubeconfig.read_text())
    doc["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    unreachable.write_text(yaml.safe_dump(doc))
    r = call(conf(api, kubernetes={"kubeconfig": str(unreachable)}))
    assert r.rc == 1 and r.out["code"] == 11 and "not reachable" in r.out["msg"], r.raw
    # A pool of /31 blocks with strict affinity: two addresses for this node, then code 11.
    with api.client() as c:
        cfg = c.get("IPAMConfig", "default")
        cfg["spec"]["strictAffinity"] = True
        cfg["spec"]["maxBlocksPerHost"] = 1
        c.update(cfg)
    p0, _ = add(box, api, "p0")
    add(box, api, "p1")
    r = call(conf(api))
    assert r.rc == 1 and r.out["code"] == 11 and "no free address" in r.out["msg"], r.raw
    assert "eth0" not in box.in_netns(netns, "ip", "-o", "link").stdout
    assert "cali" + hashlib.sha1(b"default.x").hexdigest()[:11] not in box.in_runtime("ip", "-o", "link")
    # An existing interface is refused before any address is taken.
    taken = box.call("calico", "ADD", conf(api), container_id="ctr-y", netns=p0, env=pod_args("y"))
    assert taken.rc == 1 and "already exists" in taken.out["msg"], taken.raw
    with api.client() as c:
        assert c.get("IPAMHandle", "k8s-pod-network.ctr-y") is None


@pytest.mark.parametrize("api", [29], indirect=True)
def test_a_conflist_through_netsims_runtime_and_plugin_server(cni_sandbox, api):
    """The node agent's path: netsim's CNI runtime execs the launchers in the node namespace
    with a conflist (calico, then portmap), the launchers hand the calls to a plugin server,
    which runs them on threads in the caller's namespace; eight pods at once on /29 blocks
    (eight addresses each) still get eight different addresses."""
    box = cni_sandbox
    raw = json.dumps({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [
        {k: v for k, v in conf(api).items() if k not in ("cniVersion", "name")},
        {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}]}).encode()
    netlist = runtime.parse_conflist(raw)
    server = PluginServer(str(box.tmp / "cni.sock")).start()
    try:
        rt = runtime.Runtime([str(OURS)], kernel.netns_path(box.runtime), {"NETSIM_CNI_SOCKET": server.path})
        pods = {f"r{i}": box.container(f"r{i}") for i in range(8)}
        confs = {pod: runtime.RuntimeConf(f"ctr-{pod}", netns, args=[("K8S_POD_NAMESPACE", "default"),
                                                                      ("K8S_POD_NAME", pod)],
                                          cache_dir=str(box.tmp / "cache")) for pod, netns in pods.items()}
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = dict(zip(confs, pool.map(lambda c: rt.add(netlist, c), confs.values()), strict=True))
        assert server.calls >= 16  # calico and portmap per pod (calico-ipam runs inside calico's call)
        ips = {pod: r["ips"][0]["address"] for pod, r in results.items()}
        assert len(set(ips.values())) == 8 and all(ip.endswith("/32") for ip in ips.values())
        blocks = api.blocks()
        assert sum(a is not None for b in blocks.values() for a in b["allocations"]) == 8
        assert {b["affinity"] for b in blocks.values()} == {f"host:{NODE}"}
        rt.check(netlist, confs["r0"])
        r1 = ips["r1"].split("/")[0]
        ping = box.in_netns(pods["r0"], "ping", "-c1", "-W2", r1, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        for c in confs.values():
            rt.delete(netlist, c)
        assert not [line for line in box.in_runtime("ip", "-o", "link").splitlines() if " cali" in line]
        assert all(a is None for b in api.blocks().values() for a in b["allocations"])
    finally:
        server.stop()
