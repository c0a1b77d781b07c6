"""What the kube-proxy tests share, kernel or not: the lab's addresses and the builders of
Service ports and endpoints (tests/unit/test_proxy_*_render.py, tests/kernel/test_proxy_*.py)."""

from __future__ import annotations

import base64
import hashlib

from proxy.model import Endpoint, ServicePort

NODE = "node"
CLUSTER_CIDR = "10.244.0.0/16"
NODE_IP = "192.168.77.1"
EXTERNAL_IP = "192.168.77.2"
BRIDGE_IP = "10.244.1.1"
POD_A, POD_B, CLIENT = "10.244.1.11", "10.244.1.12", "10.244.1.20"
TCP_PORT, UDP_PORT = 8080, 5353


def upstream_hash(text: str) -> str:
    """base32(sha256(text))[:16], computed here without proxy.iptables."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc(name, cluster_ip, endpoints=(), *, ns="default", port_name="", proto="TCP", port=80, **kw) -> ServicePort:
    return ServicePort(ns, name, port_name, proto, cluster_ip, port, endpoints=tuple(endpoints), **kw)


def ep(ip, port=TCP_PORT, node=NODE, **kw) -> Endpoint:
    return Endpoint(ip, port, node=node, **kw)


