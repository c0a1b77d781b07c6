"""The ``calico`` plugin: a routed veth per pod, as projectcalico/calico's cni-plugin builds it
(pkg/dataplane/linux/dataplane_linux.go), addressed by the IPAM plugin the config names
(``calico-ipam``).

No bridge: the node's end of the veth is ``cali`` + the first 11 hex digits of
sha1("<K8S_POD_NAMESPACE>.<K8S_POD_NAME>") (libcalico-go's VethNameForWorkload; ``cali`` + the
container ID's first 11 characters for a call that names no pod), MAC ee:ee:ee:ee:ee:ee, no
address, up, with proxy_arp=1, forwarding=1, route_localnet=1, neigh proxy_delay=0 (and
accept_ra=0 where IPv6 exists).  The pod's ``eth0`` gets the netconf's ``mtu``, its address
as a /32, ``169.254.1.1 dev eth0 scope link`` and ``default via 169.254.1.1 dev eth0``: no
router has that address, the node answers ARP for it by proxy.  The node gets
``<podIP> dev caliX scope link`` and a permanent neighbour entry for the pod's MAC (Felix's
part upstream; the agent has no Felix of its own for it).

Netconf keys are upstream's: ``mtu`` (default 1500), ``nodename``, ``datastore_type``
("kubernetes"), ``kubernetes.kubeconfig``, ``ipam`` ({"type": "calico-ipam"}), and
``container_settings.allow_ip_forwarding``.  DEL deletes the pod's interface (its veth peer,
route and neighbour go with it) and releases the IPAM handle; a DEL for a sandbox that is gone
is no error.  Errors are the spec's error JSON: 7 bad netconf, 4 bad environment, 11 IPAM
cannot allocate now, 999 the rest.

Runs in the runtime's network namespace (the calling thread's under the plugin server).
May import: netsim.kernel, netsim.cni and the standard library.
"""

from __future__ import annotations

import errno
import hashlib
import os

from netsim.cni import spec

HOST_MAC = "ee:ee:ee:ee:ee:ee"
# Felix's metric for workload routes: BIRD's block aggregation exports a route inside the node's
# own block only when its metric is below this (an "elevated" route, e.g. a VM live-migrating in),
# so a workload at the default metric rides on the block's route and no /32 per pod reaches peers.
WORKLOAD_ROUTE_METRIC = 1024
GATEWAY = "169.254.1.1"
DEFAULT_MTU = 1500
VETH_PREFIX = "cali"
HOST_SYSCTLS_V4 = ("net.ipv4.conf.{}.route_localnet", "net.ipv4.neigh.{}.proxy_delay", "net.ipv4.conf.{}.proxy_arp",
                   "net.ipv4.conf.{}.forwarding")
HOST_SYSCTL_VALUES = {"proxy_delay": "0"}


def veth_name(namespace: str, pod: str) -> str:
    """``cali`` + sha1("<namespace>.<pod>")[:11]: 15 characters, a Linux name's limit."""
    return VETH_PREFIX + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def host_veth_name(req: spec.Request) -> str:
    ns, pod = req.args.get("K8S_POD_NAMESPACE"), req.args.get("K8S_POD_NAME")
    if ns and pod:
        return veth_name(ns, pod)
    return VETH_PREFIX + req.container_id[:11]


def _conf(req: spec.Request) -> dict:
    c = req.config
    mtu = c.get("mtu", DEFAULT_MTU)
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
        raise spec.CNIError(spec.INVALID_CONFIG, f"calico: invalid mtu {mtu!r}", "an integer from 68 to 65535")
    if c.get("datastore_type", "kubernetes") != "kubernetes":
        raise spec.CNIError(spec.UNSUPPORTED_FIELD, f"calico: datastore_type {c['datastore_type']!r} is not "
                            "supported", 'netsim keeps Calico\'s objects in the Kubernetes API: "kubernetes"')
    ipam = c.get("ipam") or {}
    if not isinstance(ipam.get("type"), str) or not ipam["type"]:
        raise spec.CNIError(spec.INVALID_CONFIG, "calico: ipam.type is required", '"ipam": {"type": "calico-ipam"}')
    settings = c.get("container_settings") or {}
    if not isinstance(settings, dict) or not isinstance(settings.get("allow_ip_forwarding", False), bool):
        raise spec.CNIError(spec.INVALID_CONFIG, "calico: container_settings.allow_ip_forwarding must be "
                            "true or false")
    return {"mtu": mtu, "ipam": ipam, "forwarding": settings.get("allow_ip_forwarding", False)}


def _pod_address(ipam: dict) -> str:
    """The IPv4 address IPAM gave, as the pod's /32 (upstream rewrites the block's mask)."""
    import ipaddress

    for ip in ipam.get("ips") or []:
        iface = ipaddress.ip_interface(ip["address"])
        if iface.version == 4:
            return f"{iface.ip}/32"
    raise spec.CNIError(spec.INTERNAL, "calico: IPAM returned no IPv4 address", str(ipam.get("ips")))


def _host_sysctls(host_if: str) -> None:
    from netsim import kernel

    for template in HOST_SYSCTLS_V4:
        key = template.format(host_if)
        kernel.sysctl(key, HOST_SYSCTL_VALUES.get(key.rsplit(".", 1)[1], "1"))
    if os.path.exists(f"/proc/sys/net/ipv6/conf/{host_if}"):  # IPv6 may be off in this namespace
        kernel.sysctl(f"net.ipv6.conf.{host_if}.accept_ra", "0")


def cmd_add(req: spec.Request) -> dict:
    from netsim import kernel

    conf = _conf(req)
    host_if = host_veth_name(req)
    with kernel.Namespace.here() as host, kernel.Namespace.at(req.netns) as cont:
        if cont.link(req.ifname) is not None:
            raise spec.CNIError(spec.INTERNAL, f"container veth name provided ({req.ifname}) already exists")
        ipam = req.delegate(conf["ipam"]["type"], req.config) or {}
        try:
            address = _pod_address(ipam)
            result = _wire(req, conf, host, cont, host_if, address)
        except BaseException:
            try:
                with host.batch() as b:
                    b.delete_link(host_if)
            finally:
                req.delegate(conf["ipam"]["type"], req.config, "DEL")
            raise
    result["dns"] = req.config.get("dns") or ipam.get("dns") or {}
    return result


def _wire(req: spec.Request, conf: dict, host, cont, host_if: str, address: str) -> dict:
    from netsim import kernel

    pod_ip = address.split("/")[0]
    with host.batch() as b:
        # A veth left by an earlier sandbox of the same pod goes first (upstream does the same).
        b.delete_link(host_if)
    with host.batch() as b:
        b.add_veth(host_if, req.ifname, cont, conf["mtu"])
        b.set_link(host_if, mac=HOST_MAC)
    _host_sysctls(host_if)
    pod_if = cont.link(req.ifname)
    if pod_if is None:
        raise spec.CNIError(spec.INTERNAL, f"calico: {req.ifname} did not appear in {req.netns}")
    index = pod_if["index"]
    with cont.batch() as b:
        b.set_link(req.ifname, index=index, up=True)
    with cont.batch() as b:
        b.replace_route(f"{GATEWAY}/32", oif=index, proto=kernel.RTPROT_BOOT)
        b.replace_route("0.0.0.0/0", gateway=GATEWAY, oif=index, proto=kernel.RTPROT_BOOT)
        b.add_address(index, address)
    kernel.sysctl("net.ipv4.ip_forward", int(conf["forwarding"]), netns=req.netns)
    host_link = host.link(host_if)
    with host.batch() as b:
        b.set_link(host_if, index=host_link["index"], up=True)
        b.replace_route(address, oif=host_link["index"], proto=kernel.RTPROT_BOOT, priority=WORKLOAD_ROUTE_METRIC)
        b.replace_neigh(host_link["index"], pod_ip, pod_if["mac"])
    return {
        "cniVersion": spec.LATEST,
        "interfaces": [{"name": host_if, "mac": HOST_MAC},
                       {"name": req.ifname, "mac": pod_if["mac"], "mtu": conf["mtu"], "sandbox": req.netns}],
        "ips": [{"address": address, "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY}],
    }


def cmd_del(req: spec.Request) -> None:
    from netsim import kernel

    conf = _conf(req)
    # Only the pod's own end: the node's end is named after the pod, and a DEL for an older
    # sandbox of the same pod must not cut the new one off.
    if req.netns and os.path.exists(req.netns):
        try:
            with kernel.Namespace.at(req.netns) as cont, cont.batch() as b:
                b.delete_link(req.ifname)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                raise
    req.delegate(conf["ipam"]["type"], req.config)


def _fail(msg: str) -> spec.CNIError:
    return spec.CNIError(spec.INTERNAL, f"calico: {msg}")


def cmd_check(req: spec.Request) -> None:
    import socket

    from netsim import kernel

    conf = _conf(req)
    prev = req.prev_result
    if not prev:
        raise spec.CNIError(spec.INVALID_CONFIG, "calico: CHECK needs prevResult")
    req.delegate(conf["ipam"]["type"], req.config)
    host_if = host_veth_name(req)
    cont_want = next((i for i in prev.get("interfaces") or [] if i.get("sandbox") and i.get("name") == req.ifname),
                     None)
    addresses = [ip["address"] for ip in prev.get("ips") or [] if ":" not in ip["address"]]
    if cont_want is None or not addresses:
        raise spec.CNIError(spec.INVALID_CONFIG, "calico: prevResult lacks the pod interface or its address")
    with kernel.Namespace.here() as host, kernel.Namespace.at(req.netns) as cont:
        pod_if = cont.link(req.ifname)
        if pod_if is None:
            raise spec.CNIError(spec.UNKNOWN_CONTAINER, f"calico: interface {req.ifname} not found in {req.netns}")
        if cont_want.get("mac") and pod_if["mac"] != cont_want["mac"]:
            raise _fail(f"{req.ifname} has MAC {pod_if['mac']}, expected {cont_want['mac']}")
        if pod_if["mtu"] != conf["mtu"]:
            raise _fail(f"{req.ifname} has MTU {pod_if['mtu']}, expected {conf['mtu']}")
        have = cont.addresses_of(pod_if["index"], socket.AF_INET)
        for address in addresses:
            if address not in have:
                raise _fail(f"{req.ifname} lacks address {address}")
        routes = cont.route_entries()
        if not any(r["dst"] == f"{GATEWAY}/32" and r["oif"] == pod_if["index"] and r["scope"] == 253 for r in routes):
            raise _fail(f"{req.ifname} lacks the route {GATEWAY} scope link")
        if not any(r["dst"] == "default" and r["gateway"] == GATEWAY and r["oif"] == pod_if["index"] for r in routes):
            raise _fail(f"the pod lacks its default route via {GATEWAY}")
        veth = host.link(host_if)
        if veth is None:
            raise _fail(f"host interface {host_if} not found")
        if veth["mac"] != HOST_MAC or not veth["up"]:
            raise _fail(f"{host_if} is not up with MAC {HOST_MAC}")
        host_routes = host.route_entries()
        neighbours = host.neighbours(veth["index"])
        for address in addresses:
            ip = address.split("/")[0]
            if not any(r["dst"] == f"{ip}/32" and r["oif"] == veth["index"] for r in host_routes):
                raise _fail(f"the node lacks the route {ip} dev {host_if}")
            entry = neighbours.get(ip)
            if entry is None or entry["mac"] != pod_if["mac"] or not entry["state"] & kernel.NUD_PERMANENT:
                raise _fail(f"the node lacks the permanent neighbour {ip} lladdr {pod_if['mac']} dev {host_if}")
    if kernel.sysctl(f"net.ipv4.conf.{host_if}.proxy_arp") != "1":
        raise _fail(f"proxy_arp is off on {host_if}")


def cmd_status(req: spec.Request) -> None:
    conf = _conf(req)
    req.delegate(conf["ipam"]["type"], req.config)


def cmd_gc(req: spec.Request) -> None:
    conf = _conf(req)
    req.delegate(conf["ipam"]["type"], req.config)
