"""The ``bridge`` plugin: a veth from the container into a Linux bridge in the runtime's
namespace, addressed by the IPAM plugin the config names (reference: plugins/main/bridge).

Runs in the runtime's network namespace (the calling thread's, when the plugin server runs
it): every netlink socket is opened by the calling thread, never through /proc/self.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import socket

from netsim.cni import spec
from netsim.kernel import netfilter

DEFAULT_BRIDGE = "cni0"
DEFAULT_MTU = 1500
CHAIN_PREFIX = "CNI-"
MAX_CHAIN = 28  # iptables' chain name limit, as upstream's utils.FormatChainName uses it


def _conf(req: spec.Request) -> dict:
    c = req.config
    bool_keys = ("isGateway", "isDefaultGateway", "ipMasq", "hairpinMode", "promiscMode", "forceAddress")
    for key in bool_keys:
        if key in c and not isinstance(c[key], bool):
            raise spec.CNIError(spec.INVALID_CONFIG, f"bridge: {key!r} must be true or false, not {c[key]!r}")
    name = c.get("bridge") or DEFAULT_BRIDGE
    if not isinstance(name, str) or len(name) > 15 or spec.IFNAME_BAD.search(name):
        raise spec.CNIError(spec.INVALID_CONFIG, f"bridge: invalid bridge name {name!r}",
                            "at most 15 characters, no '/', ':' or whitespace")
    mtu = c.get("mtu") or DEFAULT_MTU
    if not isinstance(mtu, int) or not 68 <= mtu <= 65535:
        raise spec.CNIError(spec.INVALID_CONFIG, f"bridge: invalid mtu {mtu!r}", "an integer from 68 to 65535")
    if c.get("vlan"):
        raise spec.CNIError(spec.UNSUPPORTED_FIELD, f"bridge: unsupported field vlan={c['vlan']!r}",
                            "VLAN filtering is not implemented by netsim's bridge plugin")
    ipam = c.get("ipam") or {}
    if not isinstance(ipam, dict):
        raise spec.CNIError(spec.INVALID_CONFIG, "bridge: 'ipam' must be an object")
    return {
        "bridge": name, "mtu": mtu, "ipam": ipam,
        "isDefaultGateway": c.get("isDefaultGateway", False),
        "isGateway": c.get("isGateway", False) or c.get("isDefaultGateway", False),
        "ipMasq": c.get("ipMasq", False), "hairpinMode": c.get("hairpinMode", False),
        "promiscMode": c.get("promiscMode", False), "forceAddress": c.get("forceAddress", False),
        "mac": req.runtime_config.get("mac") or req.args.get("MAC"),
    }


# -- iptables (ipMasq) --------------------------------------------------------------------
def chain_name(network: str, container_id: str) -> str:
    digest = hashlib.sha512((network + container_id).encode()).hexdigest()
    return CHAIN_PREFIX + digest[:MAX_CHAIN - len(CHAIN_PREFIX)]


def comment(network: str, container_id: str) -> str:
    return f'name: "{network}" id: "{container_id}"'


def _nat(save: str) -> netfilter.Table:
    """The nat table, empty when this family's iptables is not usable here."""
    try:
        return netfilter.save(save, table="nat")["nat"]
    except netfilter.ToolError:
        return netfilter.Table("nat")


def _restore(tool: str, lines: list[str]) -> None:
    try:
        netfilter.restore(netfilter.restore_text({"nat": lines}), tool)
    except netfilter.ToolError as exc:
        raise spec.CNIError(spec.INTERNAL, f"{tool} failed", exc.stderr or str(exc)) from exc


def setup_masq(network: str, container_id: str, ips: list[dict]) -> None:
    chain = chain_name(network, container_id)
    note = comment(network, container_id)
    for family, (restore, save) in (("4", ("iptables-restore", "iptables-save")),
                                    ("6", ("ip6tables-restore", "ip6tables-save"))):
        nets = [ipaddress.ip_interface(ip["address"]) for ip in ips
                if ("6" if ":" in ip["address"] else "4") == family]
        if not nets:
            continue
        multicast = "224.0.0.0/4" if family == "4" else "ff00::/8"
        existing = _nat(save)
        lines = [f"-F {chain}" if chain in existing.chains else f":{chain} - [0:0]"]
        for net in nets:
            lines.append(netfilter.line("-A", chain, ["-d", str(net.network), "-m", "comment", "--comment", note,
                                                      "-j", "ACCEPT"]))
        lines.append(netfilter.line("-A", chain, ["!", "-d", multicast, "-m", "comment", "--comment", note,
                                                  "-j", "MASQUERADE"]))
        for net in nets:
            rule = ["-s", f"{net.ip}/{net.max_prefixlen}", "-m", "comment", "--comment", note, "-j", chain]
            if not existing.has_rule("POSTROUTING", rule):
                lines.append(netfilter.line("-A", "POSTROUTING", rule))
        _restore(restore, lines)


def teardown_masq(network: str, container_id: str) -> None:
    chain = chain_name(network, container_id)
    for restore, save in (("iptables-restore", "iptables-save"), ("ip6tables-restore", "ip6tables-save")):
        existing = _nat(save)
        if chain not in existing.chains:
            continue
        lines = [f"-D {parent} {rule}" for parent, rule in existing.jumps(chain) if parent != chain]
        _restore(restore, [*lines, f"-F {chain}", f"-X {chain}"])


# -- the plugin ---------------------------------------------------------------------------
def _host_veth_name() -> str:
    return "veth" + os.urandom(4).hex()


def _gateway_cidrs(ips: list[dict]) -> list[str]:
    out = []
    for ip in ips:
        if ip.get("gateway"):
            net = ipaddress.ip_interface(ip["address"]).network
            out.append(f"{ip['gateway']}/{net.prefixlen}")
    return out


def _ensure_bridge(host, conf: dict) -> dict:
    bridge = host.link(conf["bridge"])
    if bridge is not None and bridge.get("kind") not in (None, "bridge"):
        raise spec.CNIError(spec.INTERNAL, f"{conf['bridge']!r} already exists but is not a bridge")
    if bridge is None or not bridge["up"] or (conf["promiscMode"] and not bridge["promisc"]):
        with host.batch() as b:
            if bridge is None:
                b.add_bridge(conf["bridge"], conf["mtu"], exist_ok=True)  # concurrent ADDs race to make it
            b.set_link(conf["bridge"], up=True, promisc=True if conf["promiscMode"] else None)
        bridge = host.link(conf["bridge"])
    return bridge


def _ensure_gateway_address(host, conf: dict, index: int, gateways: list[str]) -> None:
    """The bridge holds each subnet's gateway address; another address in the same subnet is an
    error unless forceAddress, which replaces it (upstream's ensureAddr)."""
    # One dump per family in use: an AF_UNSPEC dump would also decode the IPv6 link-local
    # address of every pod's veth, which grows with the node's pods.
    families = {socket.AF_INET6 if ":" in cidr else socket.AF_INET for cidr in gateways}
    addresses = set().union(*(host.addresses_of(index, family) for family in families)) if families else set()
    with host.batch() as b:
        for cidr in gateways:
            want = ipaddress.ip_interface(cidr)
            for have_text in addresses:
                have = ipaddress.ip_interface(have_text)
                if have.version != want.version or have.ip.is_link_local or have == want:
                    continue
                if have.network.overlaps(want.network):
                    if not conf["forceAddress"]:
                        raise spec.CNIError(spec.INTERNAL, f"{conf['bridge']!r} already has an IP address "
                                            f"{have_text} different from {cidr}", "set forceAddress to replace it")
                    b.delete_address(index, have_text)
            if cidr not in addresses:
                b.add_address(index, cidr, nodad=True)


def _forwarding(host, gateways: list[str]) -> None:
    for cidr in gateways:
        key = "net.ipv6.conf.all.forwarding" if ":" in cidr else "net.ipv4.ip_forward"
        if host.sysctl(key) != "1":
            host.sysctl(key, 1)


def cmd_add(req: spec.Request) -> dict:
    from netsim import kernel

    conf = _conf(req)
    if not conf["ipam"].get("type"):
        raise spec.CNIError(spec.INVALID_CONFIG, "bridge: ipam.type is required", 'e.g. "ipam": {"type": "host-local"}')
    with kernel.Namespace.here() as host, kernel.Namespace.at(req.netns) as cont:
        if cont.link(req.ifname) is not None:
            raise spec.CNIError(spec.INTERNAL, f"container veth name provided ({req.ifname}) already exists")
        bridge = _ensure_bridge(host, conf)
        host_if = _host_veth_name()
        with host.batch() as b:
            b.add_veth(host_if, req.ifname, cont, conf["mtu"], peer_mac=conf["mac"])
            b.set_link(host_if, up=True, master=bridge["index"])
            if conf["hairpinMode"]:
                b.set_bridge_port(host_if, hairpin=True)
        try:
            ipam = req.delegate(conf["ipam"]["type"], req.config) or {}
            try:
                result = _configure(req, conf, host, cont, bridge, host_if, ipam)
            except BaseException:
                req.delegate(conf["ipam"]["type"], req.config, "DEL")
                raise
        except BaseException:
            with host.batch() as b:
                b.delete_link(host_if)
            raise
    return result


def _configure(req, conf, host, cont, bridge: dict, host_if: str, ipam: dict) -> dict:
    ips = [dict(ip, interface=2) for ip in ipam.get("ips") or []]
    if not ips:
        raise spec.CNIError(spec.INTERNAL, "IPAM plugin returned missing IP config")
    routes = [dict(r) for r in ipam.get("routes") or []]
    if conf["isDefaultGateway"]:
        for ip in ips:
            if not ip.get("gateway"):
                continue
            default = "::/0" if ":" in ip["address"] else "0.0.0.0/0"
            if not any(r.get("dst") == default for r in routes):
                routes.append({"dst": default, "gw": ip["gateway"]})
    cont_if = cont.link(req.ifname)
    index = cont_if["index"]
    with cont.batch() as b:
        for ip in ips:
            b.add_address(index, ip["address"], nodad=True)
        b.set_link(req.ifname, index=index, up=True)
    with cont.batch() as b:
        for route in routes:
            gw = route.get("gw") or _default_gw(ips, route["dst"])
            b.replace_route(route["dst"], gateway=gw, oif=index if not gw else 0)
    gateways = _gateway_cidrs(ips)
    if conf["isGateway"]:
        _ensure_gateway_address(host, conf, bridge["index"], gateways)
        _forwarding(host, gateways)
    if conf["ipMasq"]:
        setup_masq(req.name, req.container_id, ips)
    return {
        "cniVersion": spec.LATEST,
        "interfaces": [
            {"name": conf["bridge"], "mac": host.link(conf["bridge"])["mac"]},
            {"name": host_if, "mac": host.link(host_if)["mac"]},
            {"name": req.ifname, "mac": cont_if["mac"], "sandbox": req.netns},
        ],
        "ips": ips,
        "routes": routes,
        "dns": req.config.get("dns") or ipam.get("dns") or {},
    }


def _default_gw(ips: list[dict], dst: str) -> str | None:
    """A route without ``gw`` goes via the gateway of its address family (upstream ConfigureIface)."""
    v6 = ":" in dst
    for ip in ips:
        if (":" in ip["address"]) == v6 and ip.get("gateway"):
            return ip["gateway"]
    return None


def cmd_del(req: spec.Request) -> None:
    from netsim import kernel

    conf = _conf(req)
    if conf["ipam"].get("type"):
        req.delegate(conf["ipam"]["type"], req.config)
    if req.netns and os.path.exists(req.netns):
        try:
            with kernel.Namespace.at(req.netns) as cont, cont.batch() as b:
                b.delete_link(req.ifname)  # takes the host end with it
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                raise
    if conf["ipMasq"]:
        teardown_masq(req.name, req.container_id)


def cmd_check(req: spec.Request) -> None:
    from netsim import kernel

    conf = _conf(req)
    prev = req.prev_result
    if not prev:
        raise spec.CNIError(spec.INVALID_CONFIG, "bridge: CHECK needs prevResult")
    if conf["ipam"].get("type"):
        req.delegate(conf["ipam"]["type"], req.config)
    interfaces = prev.get("interfaces") or []
    cont_if = next((i for i in interfaces if i.get("sandbox") and i.get("name") == req.ifname), None)
    host_if = next((i for i in interfaces if not i.get("sandbox") and i.get("name") != conf["bridge"]), None)
    if cont_if is None or host_if is None:
        raise spec.CNIError(spec.INVALID_CONFIG, "bridge: prevResult lacks the container or host interface")
    with kernel.Namespace.here() as host, kernel.Namespace.at(req.netns) as cont:
        links = cont.links()
        have = links.get(req.ifname)
        if have is None:
            raise spec.CNIError(spec.UNKNOWN_CONTAINER, f"interface {req.ifname} not found in {req.netns}")
        if cont_if.get("mac") and have["mac"] != cont_if["mac"]:
            raise spec.CNIError(spec.INTERNAL, f"{req.ifname} has MAC {have['mac']}, expected {cont_if['mac']}")
        addrs = cont.addresses(0).get(req.ifname, set())
        for ip in prev.get("ips") or []:
            if ip["address"] not in addrs:
                raise spec.CNIError(spec.INTERNAL, f"{req.ifname} lacks address {ip['address']}")
        host_links = host.links()
        bridge = host_links.get(conf["bridge"])
        veth = host_links.get(host_if["name"])
        if bridge is None:
            raise spec.CNIError(spec.INTERNAL, f"bridge {conf['bridge']} not found")
        if veth is None or veth["master"] != bridge["index"]:
            raise spec.CNIError(spec.INTERNAL, f"{host_if['name']} is not a port of {conf['bridge']}")


def cmd_status(req: spec.Request) -> None:
    """Ready unless IPAM is not, or the bridge exists but is down: then ADD could still work
    (it sets the bridge up) but the containers already on it are cut off (code 51)."""
    from netsim import kernel

    conf = _conf(req)
    if conf["ipam"].get("type"):
        req.delegate(conf["ipam"]["type"], req.config)
    with kernel.Namespace.here() as host:
        bridge = host.link(conf["bridge"])
    if bridge is not None and not bridge["up"]:
        raise spec.CNIError(spec.LIMITED_CONNECTIVITY, f"bridge {conf['bridge']} is down",
                            "containers attached to it have no connectivity until it is set up")


def cmd_gc(req: spec.Request) -> None:
    conf = _conf(req)
    if conf["ipam"].get("type"):
        req.delegate(conf["ipam"]["type"], req.config)
