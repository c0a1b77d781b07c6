"""Cluster DNS: what CoreDNS's kubernetes plugin answers, from the objects in the store.

:func:`build` turns Services, EndpointSlices and Pods into a :class:`Records` index;
:meth:`Records.answer` turns one DNS query (wire format, parsed and written by dnslib) into
its response.  The agent serves it on port 53 (UDP and TCP) inside the namespace of every
DNS pod on its nodes (pods of the ``kube-system/coredns`` Deployment, or any pod whose image
is CoreDNS), as the built-in responders stand in for other containers; a dedicated loop
rebuilds the index on every change of the store, so a new Service resolves at once.

Names, as the kubernetes plugin and the DNS spec for Services
(github.com/kubernetes/dns/blob/master/docs/specification.md) give them, in ``cluster.local``:

* ``svc.ns.svc`` -- A: the ClusterIP; headless: the ready endpoints' IPs; ExternalName: CNAME.
* ``hostname.svc.ns.svc`` -- A of an endpoint of a headless Service that has a hostname
  (StatefulSet pods: ``web-0.nginx.default.svc.cluster.local``).
* ``_port._proto.svc.ns.svc`` -- SRV for each named port: the Service's name as target
  (headless: one per endpoint, its hostname or dashed IP as target, with A records added).
* ``a-b-c-d.ns.pod`` -- A a.b.c.d (``pods insecure``, kubeadm's default).
* ``d.c.b.a.in-addr.arpa`` -- PTR for ClusterIPs and endpoint IPs of headless Services.

An unknown name in the zone is NXDOMAIN with the zone's SOA (negative TTL); a known name
without data of the asked type is NOERROR and empty (NODATA).  Names outside the zone are
REFUSED at once: there is no upstream resolver (no internet) to forward them to.  TTL 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass, field

from dnslib import CNAME, PTR, QTYPE, RCODE, RR, SOA, SRV, A, DNSRecord

from netsim import kernel

log = logging.getLogger("netsim.node.dns")

TTL = 5
DNS_PORT = 53
DNS_APP = "kube-dns"  # k8s-app label of the DNS pods and the Service
DNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.11.1"
REVERSE_ZONE = "in-addr.arpa"


def cluster_dns_ip(service_subnet: str) -> str:
    """The tenth address of the service network, as kubeadm gives the kube-dns Service."""
    return str(ipaddress.IPv4Network(service_subnet).network_address + 10)


def addon_objects(service_subnet: str, replicas: int = 2) -> list[dict]:
    """kube-system's CoreDNS Deployment and its kube-dns Service, as kubeadm installs them."""
    labels = {"k8s-app": DNS_APP}
    ports = [{"name": "dns", "containerPort": DNS_PORT, "protocol": "UDP"},
             {"name": "dns-tcp", "containerPort": DNS_PORT, "protocol": "TCP"},
             {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}]
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"dnsPolicy": "Default",
                                        "containers": [{"name": "coredns", "image": DNS_IMAGE, "ports": ports}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": DNS_APP, "namespace": "kube-system",
                      "labels": {**labels, "kubernetes.io/name": "CoreDNS"}},
         "spec": {"selector": labels, "clusterIP": cluster_dns_ip(service_subnet),
                  "ports": [{"name": "dns", "port": DNS_PORT, "protocol": "UDP", "targetPort": DNS_PORT},
                            {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP", "targetPort": DNS_PORT},
                            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}},
    ]


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


@dataclass
class Records:
    domain: str = "cluster.local"
    a: dict[str, list[str]] = field(default_factory=dict)  # name -> IPv4 addresses
    cname: dict[str, str] = field(default_factory=dict)
    srv: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # name -> (port, target)
    ptr: dict[str, str] = field(default_factory=dict)  # reverse name -> name
    names: set[str] = field(default_factory=set)  # every name that exists (with or without data)

    def _add_name(self, name: str) -> None:
        # Every parent of a name exists too (empty non-terminals answer NODATA, not NXDOMAIN).
        while name and name not in self.names:
            self.names.add(name)
            name = name.partition(".")[2]

    def add_a(self, name: str, ip: str) -> None:
        name = _norm(name)
        if ip not in self.a.setdefault(name, []):
            self.a[name].append(ip)
        self._add_name(name)

    def add_srv(self, name: str, port: int, target: str) -> None:
        name = _norm(name)
        self.srv.setdefault(name, []).append((port, _norm(target)))
        self._add_name(name)

    def in_zone(self, name: str) -> bool:
        return name == self.domain or name.endswith("." + self.domain) or name.endswith(REVERSE_ZONE)

    def soa(self) -> RR:
        return RR(self.domain, QTYPE.SOA, ttl=TTL, rdata=SOA(
            f"ns.dns.{self.domain}", f"hostmaster.{self.domain}", (1, 7200, 1800, 86400, TTL)))

    def _pod_a(self, name: str) -> str | None:
        """``a-b-c-d.<ns>.pod.<domain>``: the address the first label spells."""
        labels = name[: -len(self.domain) - 1].split(".") if name.endswith("." + self.domain) else []
        if len(labels) != 3 or labels[2] != "pod":
            return None
        try:
            return str(ipaddress.IPv4Address(labels[0].replace("-", ".")))
        except ValueError:
            return None

    def answer(self, query: bytes) -> bytes:
        try:
            request = DNSRecord.parse(query)
        except Exception:  # noqa: BLE001 -- anything unparsable gets FORMERR, never a crash
            if len(query) < 2:
                return b""
            # FORMERR with the query's ID, QR set, no sections.
            return query[:2] + struct.pack("!HHHHH", 0x8001, 0, 0, 0, 0)
        reply = request.reply()
        reply.header.ra = 1  # as CoreDNS answers (it would forward; nslookup warns without it)
        if not request.questions:
            reply.header.rcode = RCODE.FORMERR
            return reply.pack()
        q = request.questions[0]
        name = _norm(str(q.qname))
        qtype = q.qtype
        if not self.in_zone(name):
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return reply.pack()
        reply.header.aa = 1
        pod_ip = self._pod_a(name)
        found = False
        if name in self.cname:
            found = True
            target = self.cname[name]
            reply.add_answer(RR(q.qname, QTYPE.CNAME, ttl=TTL, rdata=CNAME(target + ".")))
        elif name in self.a or pod_ip:
            found = True
            if qtype in (QTYPE.A, QTYPE.ANY):
                for ip in self.a.get(name) or [pod_ip]:
                    reply.add_answer(RR(q.qname, QTYPE.A, ttl=TTL, rdata=A(ip)))
        if name in self.srv:
            found = True
            if qtype in (QTYPE.SRV, QTYPE.ANY):
                n = len(self.srv[name])
                weight = max(1, 100 // n)
                for port, target in self.srv[name]:
                    reply.add_answer(RR(q.qname, QTYPE.SRV, ttl=TTL, rdata=SRV(0, weight, port, target + ".")))
                    for ip in self.a.get(target, []):
                        reply.add_ar(RR(target + ".", QTYPE.A, ttl=TTL, rdata=A(ip)))
        if name in self.ptr:
            found = True
            if qtype in (QTYPE.PTR, QTYPE.ANY):
                reply.add_answer(RR(q.qname, QTYPE.PTR, ttl=TTL, rdata=PTR(self.ptr[name] + ".")))
        if not found and name not in self.names:
            reply.header.rcode = RCODE.NXDOMAIN
        if not reply.rr:
            reply.add_auth(self.soa())
        return reply.pack()


def _reverse(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + "." + REVERSE_ZONE


def _dashed(ip: str) -> str:
    return ip.replace(".", "-")


def build(services: list[dict], slices: list[dict], domain: str = "cluster.local") -> Records:
    """The records of a cluster's Services (with their EndpointSlices)."""
    rec = Records(domain=_norm(domain))
    rec._add_name(f"svc.{rec.domain}")
    by_service: dict[tuple[str, str], list[dict]] = {}
    for s in slices:
        svc = (s.get("metadata", {}).get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            by_service.setdefault((s["metadata"]["namespace"], svc), []).append(s)
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        base = f"{name}.{ns}.svc.{rec.domain}"
        rec._add_name(base)
        if spec.get("type") == "ExternalName" and spec.get("externalName"):
            rec.cname[base] = _norm(spec["externalName"])
            continue
        cluster_ip = spec.get("clusterIP")
        headless = cluster_ip in (None, "", "None")
        ports = [p for p in spec.get("ports") or [] if p.get("name")]
        if not headless:
            rec.add_a(base, cluster_ip)
            rec.ptr[_reverse(cluster_ip)] = base
            for p in ports:
                rec.add_srv(f"_{p['name']}._{p.get('protocol', 'TCP').lower()}.{base}", int(p["port"]), base)
            continue
        # Headless: ready endpoints (all of them with publishNotReadyAddresses).
        publish_all = bool(spec.get("publishNotReadyAddresses"))
        for s in by_service.get((ns, name), []):
            slice_ports = {p.get("name") or "": p for p in s.get("ports") or []}
            for e in s.get("endpoints") or []:
                ready = (e.get("conditions") or {}).get("ready", True) is not False
                if not (ready or publish_all):
                    continue
                for ip in e.get("addresses") or []:
                    rec.add_a(base, ip)
                    host = e.get("hostname")
                    target = f"{host or _dashed(ip)}.{base}"
                    rec.add_a(target, ip)
                    rec.ptr.setdefault(_reverse(ip), target)
                    for p in ports:
                        sp = slice_ports.get(p["name"])
                        if sp is not None and sp.get("port") is not None:
                            rec.add_srv(f"_{p['name']}._{p.get('protocol', 'TCP').lower()}.{base}",
                                        int(sp["port"]), target)
    return rec


def is_dns_pod(pod: dict) -> bool:
    """A pod the cluster DNS runs in: CoreDNS's image (any registry or tag)."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        image = (c.get("image") or "").rsplit("/", 1)[-1]
        if image.split(":", 1)[0].split("@", 1)[0] in ("coredns", "netsim-dns"):
            return True
    return False


def resolv_conf(namespace: str, nameserver: str, domain: str = "cluster.local",
                dns_config: dict | None = None, policy: str = "ClusterFirst") -> str:
    """A pod's /etc/resolv.conf, as kubelet writes it for its dnsPolicy and dnsConfig."""
    cfg = dns_config or {}
    if policy == "None":
        servers, searches, options = list(cfg.get("nameservers") or []), list(cfg.get("searches") or []), {}
    else:
        servers = [nameserver] + list(cfg.get("nameservers") or [])
        searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain] + list(cfg.get("searches") or [])
        options = {"ndots": "5"}
    for opt in cfg.get("options") or []:
        options[opt["name"]] = opt.get("value")
    lines = [f"search {' '.join(searches)}"] if searches else []
    lines += [f"nameserver {s}" for s in servers[:3]]
    if options:
        lines.append("options " + " ".join(k if v is None else f"{k}:{v}" for k, v in options.items()))
    return "\n".join(lines) + "\n"


# -- serving ----------------------------------------------------------------------------------------
class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: Server):
        self.server = server

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        reply = self.server.records.answer(data)
        if len(reply) > 512:  # no EDNS here: truncate, the client retries over TCP
            with contextlib.suppress(Exception):
                r = DNSRecord.parse(reply)
                r.rr, r.ar = [], []
                r.header.tc = 1
                reply = r.pack()
        if reply:
            self.transport.sendto(reply, addr)


class Server:
    """The answers of every DNS pod of one agent: listeners are opened per pod namespace on
    an asyncio loop (the responders' one); ``records`` is swapped whole on each change."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.records = Records()

    def update(self, records: Records) -> None:
        self.records = records

    async def serve(self, sock: socket.socket, kind: int):
        if kind == socket.SOCK_DGRAM:
            transport, _ = await self.loop.create_datagram_endpoint(lambda: _Udp(self), sock=sock)
            return transport

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await asyncio.wait_for(reader.readexactly(2), 10)
                    query = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), 10)
                    reply = self.records.answer(query)
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
            except (TimeoutError, asyncio.IncompleteReadError, OSError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, sock=sock)


def query(netns: str, server: str, name: str, qtype: str = "A", timeout: float = 2.0) -> DNSRecord:
    """One UDP query from inside ``netns`` (what a pod's resolver sends)."""
    with kernel.socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        q = DNSRecord.question(name, qtype)
        s.sendto(q.pack(), (server, DNS_PORT))
        while True:
            data, _ = s.recvfrom(65535)
            reply = DNSRecord.parse(data)
            if reply.header.id == q.header.id:
                return reply


def resolve(netns: str, name: str, conf: str, timeout: float = 2.0) -> list[str]:
    """The IPv4 addresses of ``name`` as a pod with resolv.conf ``conf`` resolves it: the
    search list when the name has fewer dots than ndots, then the name as given."""
    servers, searches, ndots = [], [], 1
    for line in conf.splitlines():
        key, _, rest = line.partition(" ")
        if key == "nameserver":
            servers.append(rest.strip())
        elif key == "search":
            searches = rest.split()
        elif key == "options":
            for opt in rest.split():
                if opt.startswith("ndots:"):
                    ndots = int(opt[6:])
    if not servers:
        raise LookupError("no nameserver in resolv.conf")
    if name.endswith("."):
        candidates = [name]
    else:
        candidates = [f"{name}.{s}" for s in searches]
        if name.count(".") >= ndots:
            candidates.insert(0, name)
        else:
            candidates.append(name)
    for candidate in candidates:
        reply = query(netns, servers[0], candidate, "A", timeout)
        ips = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
        if ips:
            return ips
    raise LookupError(f"{name}: not found (tried {', '.join(candidates)})")


__all__ = ["DNS_APP", "DNS_IMAGE", "DNS_PORT", "Records", "Server", "addon_objects", "build", "cluster_dns_ip",
           "is_dns_pod", "query",
           "resolv_conf", "resolve"]
