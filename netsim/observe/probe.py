"""One real connection from a pod, node or external host to a pod, Service, node or address.

`netsim probe` and the tests use it to see what the dataplane does: the answer of the
built-in responder names the pod that served the connection and the client address it saw,
so load balancing and source NAT are visible in one line.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import socket
import struct
import time
from dataclasses import dataclass

from netsim import fabric, kernel
from netsim.api.store import NotFound, Store
from netsim.model import k8s
from netsim.node import dns, podnet

REFS = ("pod/NS/NAME, svc/NS/NAME, lb/NS/NAME (a Service's LoadBalancer address), node/NAME, host/NAME, "
        "ip:ADDR or a DNS name (as the source resolves it)")
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?"
DNS_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$", re.IGNORECASE)


class ProbeError(ValueError):
    pass


@dataclass
class Target:
    ref: str
    ip: str
    port: int | None
    netns: str | None = None  # where a connection from this endpoint starts


def _pod(store: Store, ns: str, name: str) -> dict:
    try:
        return store.get(k8s.key("Pod", ns, name))
    except NotFound:
        raise ProbeError(f"pod {ns}/{name} not found") from None


def _node_ip(store: Store, name: str) -> str:
    try:
        node = store.get(k8s.key("Node", None, name))
    except NotFound:
        raise ProbeError(f"no node {name!r} in the cluster") from None
    ip = next((a["address"] for a in node.get("status", {}).get("addresses", []) if a["type"] == "InternalIP"), None)
    if ip is None:
        raise ProbeError(f"node {name} has no InternalIP")
    return ip


def resolve(cluster: fabric.Cluster, store: Store, ref: str, port: int | None = None) -> Target:
    kind, _, rest = ref.partition("/")
    if ref.startswith("ip:"):
        return Target(ref, ref[3:], port)
    if kind in ("pod", "po", "pods", "svc", "service", "services"):
        ns, _, name = rest.partition("/")
        if not name:
            ns, name = "default", ns
        if kind.startswith("po"):
            pod = _pod(store, ns, name)
            ip = pod.get("status", {}).get("podIP")
            if not ip:
                raise ProbeError(f"pod {ns}/{name} has no IP yet (phase "
                                 f"{pod.get('status', {}).get('phase', 'Pending')})")
            ports = [p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
            node = pod["spec"].get("nodeName")
            if pod["spec"].get("hostNetwork") and node in cluster.members:
                netns = cluster.members[node].netns
            else:
                netns = podnet.pod_netns(cluster.name, ns, name)
            return Target(ref, ip, port or (ports[0] if ports else None), netns)
        try:
            svc = store.get(k8s.key("Service", ns, name))
        except NotFound:
            raise ProbeError(f"service {ns}/{name} not found") from None
        ip = svc["spec"].get("clusterIP")
        if not ip or ip == "None":
            raise ProbeError(f"service {ns}/{name} is headless: it has no ClusterIP; probe a pod instead")
        ports = [p["port"] for p in svc["spec"].get("ports", [])]
        node_ports = {p.get("nodePort") for p in svc["spec"].get("ports", [])} - {None}
        if port in node_ports and port not in ports:
            # A Service's NodePort: reached on a node's address, as from outside the cluster.
            node = next((m for m in cluster.members.values() if m.kind == "node"), None)
            if node is not None:
                return Target(ref, node.ip, port)
        return Target(ref, ip, port or (ports[0] if ports else None))
    if kind == "lb":
        ns, _, name = rest.partition("/")
        ns, name = ("default", ns) if not name else (ns, name)
        try:
            svc = store.get(k8s.key("Service", ns, name))
        except NotFound:
            raise ProbeError(f"service {ns}/{name} not found") from None
        ips = [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
               if i.get("ip")]
        if not ips:
            kind_ = svc["spec"].get("type", "ClusterIP")
            raise ProbeError(f"service {ns}/{name} has no LoadBalancer address yet (type {kind_}"
                             + ("; give the scenario a networking.loadBalancerPool)" if kind_ == "LoadBalancer"
                                else "; only type LoadBalancer gets one)"))
        ports = [p["port"] for p in svc["spec"].get("ports", [])]
        return Target(ref, ips[0], port or (ports[0] if ports else None))
    if kind in ("node", "no", "host"):
        m = cluster.members.get(rest)
        if m is None and kind != "host" and cluster.joined:
            return Target(ref, _node_ip(store, rest), port)  # a node on another machine: reachable, not enterable
        if m is None or m.kind != ("host" if kind == "host" else "node"):
            raise ProbeError(f"no {kind} {rest!r} in cluster {cluster.name!r}")
        return Target(ref, m.ip, port, m.netns)
    raise ProbeError(f"{ref!r}: use {REFS}")


def connect(netns: str, ip: str, port: int, proto: str = "tcp", timeout: float = 2.0) -> dict:
    """Connect, say hello, read the responder's line.  Never raises for network outcomes."""
    start = time.monotonic()
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    out = {"result": "deny", "reason": "timeout", "responder": None, "clientIP": None, "latencyMs": None}
    with kernel.socket_in(netns, socket.AF_INET, kind) as sock:
        sock.setblocking(False)
        try:
            if proto == "tcp":
                rc = sock.connect_ex((ip, port))
                if rc not in (0, errno.EINPROGRESS):
                    return failed(out, rc, start)
                _, ready, _ = select.select([], [sock], [], timeout)
                if not ready:
                    return out
                rc = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if rc:
                    return failed(out, rc, start)
                out.update(result="allow", reason="connected")
                out["latencyMs"] = round((time.monotonic() - start) * 1000, 3)
            else:
                sock.connect((ip, port))
            sock.send(b"netsim-probe\n")
            line = _read_line(sock, start + timeout)
        except OSError as exc:
            return failed(out, exc.errno or 0, start)
    if line is None:
        return out
    if proto == "udp":
        out.update(result="allow", reason="connected", latencyMs=round((time.monotonic() - start) * 1000, 3))
    try:
        answer = json.loads(line)
        out["responder"] = answer.get("pod")
        out["clientIP"] = answer.get("client", "").rsplit(":", 1)[0] or None
    except (ValueError, AttributeError):
        pass
    return out


def _read_line(sock: socket.socket, deadline: float) -> bytes | None:
    data = b""
    while b"\n" not in data and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data or None


def failed(out: dict, rc: int, start: float) -> dict:
    if rc == errno.ECONNREFUSED:
        out["reason"] = "refused"
    elif rc in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        out["reason"] = "unreachable"
    out["latencyMs"] = round((time.monotonic() - start) * 1000, 3)
    out["error"] = errno.errorcode.get(rc, str(rc))
    return out


def resolve_name(store: Store, netns: str, name: str, port: int | None) -> Target:
    """A DNS name, looked up from ``netns`` as a process there would: the cluster DNS per the
    namespace's resolv.conf (/etc/netns/<netns>/resolv.conf; a node or host has none and asks
    the cluster DNS with no search path).  The port defaults to the first port of the Service
    whose ClusterIP the name has."""
    try:
        with open(f"{kernel.NETNS_ETC}/{netns}/resolv.conf") as f:
            conf = f.read()
    except FileNotFoundError:
        from netsim.api.registry import read_config

        conf = f"nameserver {dns.cluster_dns_ip(read_config(store).service_subnet)}\n"
    try:
        ip = dns.resolve(netns, name, conf)[0]
    except (LookupError, OSError) as exc:
        raise ProbeError(f"cannot resolve {name!r} from there: {exc}") from None
    if port is None:
        for svc in store.list(k8s.prefix("Service"))[0]:
            if svc.get("spec", {}).get("clusterIP") == ip and svc["spec"].get("ports"):
                port = svc["spec"]["ports"][0]["port"]
                break
    return Target(name, ip, port)


def on_another_machine(cluster: fabric.Cluster, store: Store, ref: str) -> str | None:
    """On a joined machine: the node a pod reference runs on, when that is not this machine's."""
    if not cluster.joined:
        return None
    kind, _, rest = ref.partition("/")
    ns, _, name = rest.partition("/")
    if not name:
        ns, name = "default", ns
    try:
        node = store.get(k8s.key("Pod", ns, name))["spec"].get("nodeName")
    except NotFound:
        return None
    return node if node and node != cluster.joined.node else None


def probe(cluster: fabric.Cluster, store: Store, src: str, dst: str, port: int | None = None, proto: str = "tcp",
          timeout: float = 2.0) -> dict:
    source, target = endpoints(cluster, store, src, dst, port)
    if proto == "icmp":
        result = ping(source.netns, target.ip, timeout)
        return {"from": src, "to": dst, "target": target.ip, "protocol": proto, **result}
    if target.port is None:
        raise ProbeError(f"{dst} declares no port; give one with --port")
    result = connect(source.netns, target.ip, target.port, proto, timeout)
    return {"from": src, "to": dst, "target": f"{target.ip}:{target.port}", "protocol": proto, **result}


def endpoints(cluster: fabric.Cluster, store: Store, src: str, dst: str, port: int | None) -> tuple[Target, Target]:
    """Where a connection from ``src`` to ``dst`` starts (a namespace on this machine) and goes."""
    source = resolve(cluster, store, src)
    if source.netns is None:
        raise ProbeError(f"{src!r} cannot start a connection: use a pod, node or host")
    if not kernel.netns_exists(source.netns):
        elsewhere = on_another_machine(cluster, store, src)
        if elsewhere:
            raise ProbeError(f"{src} runs on node {elsewhere}, another machine: run the probe there")
        raise ProbeError(f"{src} has no network namespace (is the pod running?)")
    if "/" not in dst and not dst.startswith("ip:") and DNS_NAME.match(dst):
        target = resolve_name(store, source.netns, dst, port)
    else:
        target = resolve(cluster, store, dst, port)
    return source, target


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(netns: str, ip: str, timeout: float = 2.0) -> dict:
    """One ICMP echo from ``netns`` (a raw socket: new namespaces allow no unprivileged ping);
    allowed when the echo reply comes back, unreachable when an ICMP error does."""
    start = time.monotonic()
    out = {"result": "deny", "reason": "timeout", "responder": None, "clientIP": None, "latencyMs": None}
    ident, seq = os.getpid() & 0xFFFF, int(start * 1000) & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"netsim-probe"
    packet = header[:2] + struct.pack("!H", _checksum(header)) + header[4:]
    with kernel.socket_in(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setblocking(False)
        sock.sendto(packet, (ip, 0))
        while (left := start + timeout - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            data, addr = sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            kind = data[ihl]
            if kind == 0 and addr[0] == ip and struct.unpack("!HH", data[ihl + 4:ihl + 8]) == (ident, seq):
                out.update(result="allow", reason="echo reply",
                           latencyMs=round((time.monotonic() - start) * 1000, 3))
                return out
            if kind == 3 and data[ihl + 24:ihl + 28] == socket.inet_aton(ip):  # the quoted packet's destination
                out.update(reason="unreachable", latencyMs=round((time.monotonic() - start) * 1000, 3))
                return out
    return out
