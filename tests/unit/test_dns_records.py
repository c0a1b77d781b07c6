"""Cluster DNS (netsim/node/dns.py): the answers, pure, from dnslib-built queries.
tests/e2e/test_dns.py asks a real cluster's kube-dns with dig, nslookup and Python's resolver."""

from __future__ import annotations

from dnslib import QTYPE, RCODE, DNSRecord

from netsim.node import dns


def svc(name, ns="default", cluster_ip="10.96.0.50", ports=({"name": "http", "port": 80},), **spec):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": cluster_ip, "ports": [dict(p) for p in ports], **spec}}


def eps(service, endpoints, ns="default", ports=({"name": "http", "port": 8080, "protocol": "TCP"},)):
    return {"metadata": {"name": f"{service}-x", "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
            "endpoints": endpoints, "ports": [dict(p) for p in ports]}


def ask(records, name, qtype="A") -> DNSRecord:
    return DNSRecord.parse(records.answer(DNSRecord.question(name, qtype).pack()))


def rdata(reply, rtype="A"):
    return sorted(str(rr.rdata) for rr in reply.rr if QTYPE[rr.rtype] == rtype)


RECORDS = dns.build(
    [svc("web"),
     svc("nginx", cluster_ip="None", ports=({"name": "web", "port": 80},)),
     svc("ext", type="ExternalName", externalName="db.example.org", cluster_ip=None),
     svc("kube-dns", ns="kube-system", cluster_ip="10.96.0.10",
         ports=({"name": "dns", "port": 53, "protocol": "UDP"},))],
    [eps("nginx", [{"addresses": ["10.244.1.5"], "hostname": "web-0", "conditions": {"ready": True}},
                   {"addresses": ["10.244.2.6"], "hostname": "web-1", "conditions": {"ready": True}},
                   {"addresses": ["10.244.2.7"], "conditions": {"ready": False}}],
         ports=({"name": "web", "port": 8080, "protocol": "TCP"},))])


def test_service_a_records_and_ttl():
    reply = ask(RECORDS, "web.default.svc.cluster.local")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa and rdata(reply) == ["10.96.0.50"]
    assert all(rr.ttl == dns.TTL for rr in reply.rr)
    assert rdata(ask(RECORDS, "WEB.Default.svc.cluster.local.")) == ["10.96.0.50"]  # case-insensitive


def test_headless_statefulset_names_and_srv():
    assert rdata(ask(RECORDS, "nginx.default.svc.cluster.local")) == ["10.244.1.5", "10.244.2.6"]  # ready only
    assert rdata(ask(RECORDS, "web-0.nginx.default.svc.cluster.local")) == ["10.244.1.5"]
    assert rdata(ask(RECORDS, "10-244-2-6.nginx.default.svc.cluster.local")) == []  # has a hostname instead
    reply = ask(RECORDS, "_web._tcp.nginx.default.svc.cluster.local", "SRV")
    targets = sorted((rr.rdata.port, str(rr.rdata.target)) for rr in reply.rr)
    assert targets == [(8080, "web-0.nginx.default.svc.cluster.local."),
                       (8080, "web-1.nginx.default.svc.cluster.local.")]
    assert sorted(str(rr.rdata) for rr in reply.ar) == ["10.244.1.5", "10.244.2.6"]  # their addresses, added
    reply = ask(RECORDS, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert [(rr.rdata.port, str(rr.rdata.target)) for rr in reply.rr] == [(80, "web.default.svc.cluster.local.")]
    reply = ask(RECORDS, "_dns._udp.kube-dns.kube-system.svc.cluster.local", "SRV")
    assert [rr.rdata.port for rr in reply.rr] == [53]


def test_pod_external_name_and_reverse_records():
    assert rdata(ask(RECORDS, "10-244-1-5.default.pod.cluster.local")) == ["10.244.1.5"]
    assert ask(RECORDS, "10-244-1-999.default.pod.cluster.local").header.rcode == RCODE.NXDOMAIN
    assert rdata(ask(RECORDS, "ext.default.svc.cluster.local"), "CNAME") == ["db.example.org."]
    assert rdata(ask(RECORDS, "10.0.96.10.in-addr.arpa", "PTR"), "PTR") == ["kube-dns.kube-system.svc.cluster.local."]
    assert rdata(ask(RECORDS, "5.1.244.10.in-addr.arpa", "PTR"), "PTR") == ["web-0.nginx.default.svc.cluster.local."]


def test_negative_answers():
    reply = ask(RECORDS, "nope.default.svc.cluster.local")
    assert reply.header.rcode == RCODE.NXDOMAIN and not reply.rr
    assert [QTYPE[rr.rtype] for rr in reply.auth] == ["SOA"]  # negative caching, as an authority answers
    reply = ask(RECORDS, "web.default.svc.cluster.local", "AAAA")  # the name exists: NODATA, not NXDOMAIN
    assert reply.header.rcode == RCODE.NOERROR and not reply.rr and reply.auth
    for name in ("default.svc.cluster.local", "svc.cluster.local", "cluster.local"):  # empty non-terminals
        assert ask(RECORDS, name).header.rcode == RCODE.NOERROR, name
    reply = ask(RECORDS, "example.com")
    assert reply.header.rcode == RCODE.REFUSED and not reply.header.aa  # no upstream: refused at once
    garbage = RECORDS.answer(b"\x12\x34\x01")
    assert garbage[:2] == b"\x12\x34" and garbage[3] & 0x0F == RCODE.FORMERR
    assert RECORDS.answer(b"") == b""


def test_resolv_conf_per_dns_policy():
    assert dns.resolv_conf("shop", "10.96.0.10") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n")
    custom = dns.resolv_conf("shop", "10.96.0.10", dns_config={
        "nameservers": ["192.0.2.53"], "searches": ["corp.example"], "options": [{"name": "ndots", "value": "2"},
                                                                                 {"name": "edns0"}]}, policy="None")
    assert custom == "search corp.example\nnameserver 192.0.2.53\noptions ndots:2 edns0\n"
    assert dns.cluster_dns_ip("10.96.0.0/12") == "10.96.0.10" and dns.cluster_dns_ip("10.100.0.0/16") == "10.100.0.10"


