"""`netsim graph`: a Graphviz picture of a real cluster (nodes, devices, tunnels, pods by
namespace, Services and their endpoints), its .svg/.png rendering, the trace overlay and the
errors.  The DOT is read back through `dot -Tjson0`, so the checks see what Graphviz sees."""

from __future__ import annotations

import itertools
import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from netsim.observe import graph
from tests.conftest import SCENARIO, K8s, run_netsim, running, unique_name

APP = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{port: 81}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeName: worker1
  containers: [{name: c, image: agnhost}]
---
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Pod
metadata: {name: lone, namespace: team}
spec:
  nodeName: worker2
  containers: [{name: c, image: agnhost, ports: [{containerPort: 90}]}]
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the module: 3 nodes, an external host, a Deployment behind a NodePort
    Service, a Service with no endpoints, a pod in another namespace."""
    tmp = tmp_path_factory.mktemp("graph")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETSIM_STATE_DIR", str(tmp / "state"))
        name = unique_name("gr")
        scenario = tmp / "scenario.yaml"
        scenario.write_text(SCENARIO)
        up = run_netsim("up", str(scenario), "--name", name)
        try:
            assert up.returncode == 0, up.stderr
            k8s = K8s(name, tmp)
            k8s.apply(APP)
            pods = running(k8s.pods() + pods_in(k8s, "team"))
            assert len(pods) == 5, [p["metadata"]["name"] for p in pods]
            yield k8s
        finally:
            assert run_netsim("down", name).returncode == 0


def pods_in(k8s: K8s, namespace: str) -> list[dict]:
    return json.loads(k8s("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]


def layout(dot: str) -> tuple[dict[str, dict], list[dict], dict]:
    """Graphviz's own reading of ``dot``: vertices by name (with `clusters`, the names of every
    cluster holding them), edges as {tail, head, attrs...}, and the graph's attributes."""
    out = subprocess.run(["dot", "-Tjson0"], input=dot, capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    objects = doc["objects"]
    vertices = {o["name"]: {**o, "clusters": []} for o in objects if "nodes" not in o and "subgraphs" not in o}
    by_id = {o["_gvid"]: o["name"] for o in objects}
    for o in objects:
        for i in o.get("nodes", []) if o["name"].startswith("cluster") else []:
            vertices[by_id[i]]["clusters"].append(o["name"])
    edges = [{**e, "tail": by_id[e["tail"]], "head": by_id[e["head"]]} for e in doc.get("edges", [])]
    return vertices, edges, doc


def cid(*parts: str) -> str:
    return "cluster_" + "_".join(p.replace("-", "_").replace(".", "_") for p in parts)


def test_graph_shows_nodes_devices_pods_services_and_tunnels(cluster, tmp_path):
    result = cluster("graph")
    dot = result.stdout
    vertices, edges, doc = layout(dot)
    nodes = json.loads(cluster("get", "nodes", "-o", "json").stdout)["items"]
    assert "flannel backend vxlan" in doc["label"] and "kube-proxy iptables" in doc["label"]
    # The underlay LAN and the external host.
    lan = vertices["underlay"]["label"]
    assert "192.168.56.0/24" in lan and "gateway 192.168.56.1" in lan and "br-underlay" in lan
    assert "192.168.56.254" in vertices["host/client"]["label"]
    assert {(e["tail"], e["head"]) for e in edges if e["head"] == "underlay"} == \
        {(f"node/{n['metadata']['name']}", "underlay") for n in nodes} | {("host/client", "underlay")}
    # Each node: its IP, role, cni0 with its pod CIDR, flannel.1, all inside the node's cluster.
    for n in nodes:
        name = n["metadata"]["name"]
        ip = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        v = vertices[f"node/{name}"]
        assert ip in v["label"] and v["clusters"] == [cid("node", name)], v
        assert ("control-plane" if name == "control-plane" else "worker") in v["label"]
        assert n["spec"]["podCIDR"] in vertices[f"node/{name}/cni0"]["label"]
        assert vertices[f"node/{name}/cni0"]["clusters"] == [cid("node", name)]
        flannel = vertices[f"node/{name}/flannel.1"]
        assert "VXLAN VNI 1" in flannel["label"] and f"local {ip}" in flannel["label"]
        assert flannel["clusters"] == [cid("node", name)]
    # VXLAN tunnels: one edge between every pair of nodes' flannel.1, labelled with VNI and port.
    tunnels = {frozenset((e["tail"], e["head"])) for e in edges if e.get("label") == "VXLAN VNI 1 UDP 8472"}
    names = [n["metadata"]["name"] for n in nodes]
    assert tunnels == {frozenset((f"node/{a}/flannel.1", f"node/{b}/flannel.1"))
                       for a, b in itertools.combinations(names, 2)}
    assert len([e for e in edges if "VXLAN" in e.get("label", "")]) == 3
    # Each pod: its IP, inside its node's cluster and its namespace's cluster there.
    pods = running(cluster.pods() + pods_in(cluster, "team") + pods_in(cluster, "kube-system"))
    assert {p["metadata"]["namespace"] for p in pods} == {"default", "team", "kube-system"}
    for p in pods:
        meta, node = p["metadata"], p["spec"]["nodeName"]
        v = vertices[f"pod/{meta['namespace']}/{meta['name']}"]
        assert p["status"]["podIP"] in v["label"] and meta["name"] in v["label"]
        assert v["clusters"] == [cid("node", node), cid("node", node, "ns", meta["namespace"])], v
    # The Service: type, ClusterIP, ports, nodePort, and edges to exactly its endpoint pods.
    svc = cluster.get("svc", "web")
    label = vertices["svc/default/web"]["label"]
    assert f"ClusterIP {svc['spec']['clusterIP']}" in label and "NodePort" in label
    assert "80/TCP → 8080" in label and "nodePort 30080" in label
    slices = json.loads(cluster("get", "endpointslices", "-o", "json").stdout)["items"]
    endpoint_pods = {f"pod/default/{e['targetRef']['name']}" for s in slices
                     if s["metadata"]["labels"]["kubernetes.io/service-name"] == "web" for e in s["endpoints"]}
    web_pods = {f"pod/default/{p['metadata']['name']}" for p in cluster.pods("app=web")}
    assert len(endpoint_pods) == 3 and endpoint_pods == web_pods
    assert {e["head"] for e in edges if e["tail"] == "svc/default/web"} == endpoint_pods
    assert not [e for e in edges if e["tail"] == "svc/default/nobody"]
    assert "no endpoints" in vertices["svc/default/nobody"]["label"]
    dns_edges = {e["head"] for e in edges if e["tail"] == "svc/kube-system/kube-dns"}
    assert len(dns_edges) == 2 and all(h.startswith("pod/kube-system/coredns-") for h in dns_edges)
    # -o FILE.dot writes the same text.
    out = tmp_path / "cluster.dot"
    written = cluster("graph", "-o", str(out))
    assert f"wrote {out}" in written.stderr
    assert out.read_text() == dot


def test_graph_renders_svg_and_png(cluster, tmp_path):
    svg, png = tmp_path / "c.svg", tmp_path / "c.png"
    cluster("graph", "-o", str(svg))
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert "svc web" in texts and "VXLAN VNI 1 UDP 8472" in texts
    cluster("graph", "-o", str(png))
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def _real_trace(cluster) -> tuple[dict, str, str]:
    """A trace in `netsim trace -o json`'s shape from pod default/client (worker1) to a web pod
    on worker2, over the cluster's real namespace names."""
    client = cluster.get("pod", "client")
    target = next(p for p in cluster.pods("app=web") if p["spec"]["nodeName"] == "worker2")
    c, t = client["status"]["podIP"], target["status"]["podIP"]
    ns = f"nsim.{cluster.name}"
    captures = [
        (f"{ns}.default.client", None, "eth0"), (f"{ns}.worker1", "worker1", "vethabc"),
        (f"{ns}.worker1", "worker1", "cni0"), (f"{ns}.worker1", "worker1", "flannel.1"),
        (f"{ns}.worker1", "worker1", "eth0"), (f"{ns}._underlay", None, "br-underlay"),
        (f"{ns}.worker2", "worker2", "eth0"), (f"{ns}.worker2", "worker2", "flannel.1"),
        (f"{ns}.worker2", "worker2", "cni0"), (f"{ns}.default.{target['metadata']['name']}", None, "eth0"),
    ]
    hops, step = [], 0
    for netns, node, ifname in captures:
        step += 1
        hops.append({"step": step, "kind": "capture", "netns": netns, "node": node, "where": netns,
                     "interface": ifname, "summary": f"{c}:40000 > {t}:8080 TCP S", "extra": {"ignored": True}})
        if ifname == "cni0" and node == "worker1":
            step += 1
            hops.append({"step": step, "kind": "route", "netns": netns, "node": node, "summary": "via flannel.1"})
    back = [h for h in reversed(hops) if h["kind"] == "capture"]
    reply = [{"step": i + 1, "kind": "capture", "netns": h["netns"], "node": h["node"], "interface": h["interface"],
              "summary": f"{t}:8080 > {c}:40000 TCP SA"} for i, h in enumerate(back)]
    doc = {"from": "pod/default/client", "to": f"pod/default/{target['metadata']['name']}", "protocol": "TCP",
           "port": 8080, "hops": hops, "reply": reply,
           "verdict": {"result": "DELIVERED", "where": f"pod default/{target['metadata']['name']}",
                       "reason": "the responder answered"}}
    return doc, "pod/default/client", f"pod/default/{target['metadata']['name']}"


def test_trace_overlay_on_a_real_cluster(cluster, tmp_path):
    doc, src, dst = _real_trace(cluster)
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "traced.dot"
    cluster("graph", "--trace", str(path), "-o", str(out))
    vertices, edges, gdoc = layout(out.read_text())
    assert "verdict: DELIVERED" in gdoc["label"] and f"trace {src} → {dst} TCP/8080" in gdoc["label"]
    red = {(e["tail"], e["head"], e["label"]) for e in edges if e.get("color") == graph.TRACE_COLOR}
    assert red == {
        (src, "node/worker1/cni0", "1→2,3"),  # captures 2 and 3 are both at cni0
        ("node/worker1/cni0", "node/worker1/flannel.1", "2,3→5"),  # step 4 is a route, not a capture
        ("node/worker1/flannel.1", "node/worker1", "5→6"),
        ("node/worker1", "underlay", "6→7"),
        ("underlay", "node/worker2", "7→8"),
        ("node/worker2", "node/worker2/flannel.1", "8→9"),
        ("node/worker2/flannel.1", "node/worker2/cni0", "9→10"),
        ("node/worker2/cni0", dst, "10→11"),
    }
    reply = {(e["tail"], e["head"]) for e in edges if e.get("color") == graph.REPLY_COLOR}
    assert reply == {(b, a) for a, b, _ in red}
    assert all("dashed" in e["style"] for e in edges if e.get("color") == graph.REPLY_COLOR)
    assert vertices[src]["color"] == graph.TRACE_COLOR
    # Rendered with the overlay, too.
    svg = tmp_path / "traced.svg"
    cluster("graph", "--trace", str(path), "-o", str(svg))
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_graph_errors(cluster, tmp_path):
    bad = cluster("graph", "-o", str(tmp_path / "x.jpg"), check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "unknown extension .jpg" in bad.stderr
    assert not (tmp_path / "x.jpg").exists()
    missing = cluster("graph", "--trace", str(tmp_path / "nope.json"), check=False)
    assert missing.returncode == 2 and "nope.json" in missing.stderr and "cannot read" in missing.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    result = cluster("graph", "--trace", str(garbage), check=False)
    assert result.returncode == 2 and "not JSON" in result.stderr
    shapeless = tmp_path / "shapeless.json"
    shapeless.write_text('{"hops": 3}')
    result = cluster("graph", "--trace", str(shapeless), check=False)
    assert result.returncode == 2 and "`hops` list" in result.stderr
    # A hop in a namespace that is not this cluster's: named by its step.
    doc, _, _ = _real_trace(cluster)
    doc["hops"][2]["netns"] = "nsim.othercluster.worker1"
    alien = tmp_path / "alien.json"
    alien.write_text(json.dumps(doc))
    result = cluster("graph", "--trace", str(alien), check=False)
    assert result.returncode == 2, result.stderr
    assert "hop 3" in result.stderr and "nsim.othercluster.worker1" in result.stderr
    assert result.stderr.count("\n") == 1
    unknown = run_netsim("graph", "-c", unique_name("none"))
    assert unknown.returncode != 0 and "no state" in unknown.stderr


def test_host_gw_cluster_has_routes_and_no_tunnels(tmp_path, state_dir):
    name = unique_name("gh")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO + "networking:\n  backend: host-gw\n")
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        k8s = K8s(name, tmp_path)
        vertices, edges, doc = layout(k8s("graph").stdout)
        assert "flannel backend host-gw" in doc["label"]
        assert not [v for v in vertices if v.endswith("/flannel.1")]
        assert not [e for e in edges if "VXLAN" in e.get("label", "")]
        nodes = json.loads(k8s("get", "nodes", "-o", "json").stdout)["items"]
        for n in nodes:
            label = vertices[f"node/{n['metadata']['name']}"]["label"]
            assert "host-gw routes:" in label
            for other in nodes:
                if other is n:
                    continue
                ip = next(a["address"] for a in other["status"]["addresses"] if a["type"] == "InternalIP")
                assert f"{other['spec']['podCIDR']} via {ip} ({other['metadata']['name']}) dev eth0" in label
    finally:
        assert run_netsim("down", name).returncode == 0


# -- the renderer alone ----------------------------------------------------------------------------
def _topology() -> graph.Topology:
    u = graph.Underlay("10.0.0.0/24", "10.0.0.1", "br-underlay", "nsim.p._underlay", 1500)
    nodes = [graph.Node(n, "worker", f"10.0.0.{i + 2}", f"nsim.p.{n}", True, f"10.244.{i}.0/24", True,
                        [f"10.244.{i}.1/24"], [f"veth{i}"],
                        graph.Vxlan(1, 8472, f"10.0.0.{i + 2}", 1450, [f"10.244.{i}.0/32"],
                                    [f"10.0.0.{j + 2}" for j in range(2) if j != i]))
             for i, n in enumerate(("a", "b"))]
    pods = [graph.Pod("default", 'we"ird', "10.244.0.5", "a", 'nsim.p.default.we"ird', "Running"),
            graph.Pod("default", "srv", "10.244.1.5", "b", "nsim.p.default.srv", "Running"),
            graph.Pod("default", "pending", None, None, "nsim.p.default.pending", "Pending")]
    svc = graph.Service("default", "s", "ClusterIP", "10.96.0.9", ["80/TCP"], [],
                        [graph.Endpoint("10.244.1.5", "default/srv"), graph.Endpoint("10.244.9.9", None)])
    return graph.Topology("p", u, "vxlan", "nftables", "10.244.0.0/16", "10.96.0.0/12", nodes,
                          [graph.Host("ext", "10.0.0.254", "nsim.p.ext")], pods, [svc])


def test_render_locates_captures_and_reports_unknown_namespaces():
    topo = _topology()
    assert graph.locate(topo, "nsim.p.a", "flannel.1") == "node/a/flannel.1"
    assert graph.locate(topo, "nsim.p.a", "veth0") == "node/a/cni0"
    assert graph.locate(topo, "nsim.p.a", "cni0") == "node/a/cni0"
    assert graph.locate(topo, "nsim.p.a", "eth0") == "node/a"
    assert graph.locate(topo, "nsim.p.a", None) == "node/a"
    assert graph.locate(topo, "nsim.p._underlay", "x") == "underlay"
    assert graph.locate(topo, "nsim.p.ext", "eth0") == "host/ext"
    assert graph.locate(topo, "nsim.p.default.srv", "eth0") == "pod/default/srv"
    assert graph.locate(topo, "nsim.q.a", "eth0") is None
    trace = {"hops": [{"step": 1, "kind": "capture", "netns": "nsim.p.ext", "interface": "eth0"},
                      {"step": 2, "kind": "nat", "netns": "nsim.p.a"},
                      {"step": 3, "kind": "capture", "netns": "nsim.p.a", "interface": "eth0"},
                      {"step": 4, "kind": "capture", "netns": "nsim.p.b.x", "where": "pod b/x", "interface": "eth0"}],
             "verdict": {"result": "DROPPED", "where": "node a", "reason": "policy"}}
    with pytest.raises(graph.GraphError, match=r"hop 4 \(pod b/x\): network namespace 'nsim.p.b.x' is not part"):
        graph.render(topo, trace)
    trace["hops"].pop()
    dot = graph.render(topo, trace)
    vertices, edges, doc = layout(dot)
    assert "verdict: DROPPED at node a" in doc["label"] and "policy" in doc["label"]
    assert [(e["tail"], e["head"], e["label"]) for e in edges if e.get("color") == graph.TRACE_COLOR] == \
        [("host/ext", "node/a", "1→3")]
    # Quoting: a name with a quote survives the round trip; an endpoint without a pod gets a vertex.
    assert '10.244.0.5' in vertices['pod/default/we"ird']["label"]
    assert {e["head"] for e in edges if e["tail"] == "svc/default/s"} == {"pod/default/srv", "ip/10.244.9.9"}
    assert vertices["pod/default/pending"]["clusters"] == ["cluster_unscheduled"]
    # One capture only: a numbered vertex, no edge.
    one = graph.render(topo, {"hops": [{"step": 1, "kind": "capture", "netns": "nsim.p.ext"}]})
    assert 'xlabel=1' in one


def test_output_format():
    assert graph.output_format(None) == "dot"
    assert graph.output_format("x.SVG") == "svg" and graph.output_format("a/b.png") == "png"
    for bad in ("x.jpg", "x", "x.dot.gz"):
        with pytest.raises(graph.GraphError, match="use FILE.svg, FILE.png or FILE.dot"):
            graph.output_format(bad)
