"""host-local IPAM: allocation, the on-disk store, every command, and agreement with the
reference plugin (/usr/lib/cni/host-local, containernetworking-plugins 1.1.1) on the same
data directory.

Calls go through the executable (``cni_sandbox.call``) where the process boundary matters
(the reference, concurrency, the shim) and through ``spec.run`` in-process elsewhere: the
executable runs exactly ``spec.run`` with its environment and stdin, and an exec costs
~0.2 s.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from netsim.cni import spec
from tests.cni_util import REFERENCE, CniCall

REF = str(REFERENCE / "host-local")

needs_reference = pytest.mark.skipif(not os.access(REF, os.X_OK), reason="containernetworking-plugins not installed")


class HostLocal:
    """Calls host-local the three ways the tests need, against one data directory."""

    def __init__(self, box, name: str = "net1"):
        self.box = box
        self.data = box.tmp / "data"
        self.name = name
        self.netns = box.container("c")

    @property
    def dir(self) -> Path:
        return self.data / self.name

    def conf(self, ipam: dict | None = None, version: str = "1.1.0", **top) -> dict:
        ipam = {"type": "host-local", "dataDir": str(self.data), **(ipam or {"subnet": "10.1.0.0/24"})}
        return {"cniVersion": version, "name": self.name, "type": "host-local", "ipam": ipam, **top}

    def env(self, command: str, cid: str, ifname: str, args: str) -> dict:
        env = {"CNI_COMMAND": command, "CNI_PATH": str(REFERENCE)}
        if cid:
            env.update(CNI_CONTAINERID=cid, CNI_NETNS=self.netns, CNI_IFNAME=ifname)
        if args:
            env["CNI_ARGS"] = args
        return env

    def run(self, command: str, conf: dict, cid: str = "", ifname: str = "eth0", args: str = "") -> CniCall:
        """In-process, exactly what the executable does."""
        rc, out = spec.run("host-local", self.env(command, cid, ifname, args), json.dumps(conf).encode())
        text = out.decode()
        return CniCall(rc, json.loads(text) if text.strip() else None, text, "")

    def exe(self, plugin: str, command: str, conf: dict, cid: str = "", ifname: str = "eth0",
            args: str = "") -> CniCall:
        """Through an executable (ours: "host-local"; the reference: REF) in the runtime netns."""
        env = {"CNI_ARGS": args} if args else None
        return self.box.call(plugin, command, conf, container_id=cid, netns=self.netns if cid else "",
                             ifname=ifname if cid else "", env=env, cni_path=str(Path(REF).parent)
                             if plugin == REF else None)

    def add(self, conf: dict, cid: str, ifname: str = "eth0", args: str = "") -> list[str]:
        call = self.run("ADD", conf, cid, ifname, args)
        assert call.rc == 0, call.raw
        return [ip["address"] for ip in call.out["ips"]]

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.dir.iterdir()}

    def held(self) -> dict[str, bytes]:
        return {k: v for k, v in self.files().items() if k[0].isdigit() or ":" in k}


@pytest.fixture
def hl(cni_sandbox):
    return HostLocal(cni_sandbox)


# -- allocation and the store --------------------------------------------------------------
def test_add_through_the_executable_writes_the_reference_store(hl):
    conf = hl.conf({"subnet": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]})
    call = hl.exe("host-local", "ADD", conf, "ctr-a")
    assert call.rc == 0, call.raw + call.stderr
    assert call.out == {"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1"}],
                        "routes": [{"dst": "0.0.0.0/0"}], "dns": {}}
    assert "interfaces" not in call.out and "interface" not in call.out["ips"][0]
    assert hl.files() == {"10.1.0.2": b"ctr-a\r\neth0", "last_reserved_ip.0": b"10.1.0.2", "lock": b""}
    assert stat.S_IMODE(hl.dir.stat().st_mode) == 0o755
    for name in ("10.1.0.2", "last_reserved_ip.0"):
        assert stat.S_IMODE((hl.dir / name).stat().st_mode) == 0o644
    assert not list(hl.dir.glob(".*")), "no temporary file is left behind"
    assert hl.exe("host-local", "DEL", conf, "ctr-a").rc == 0
    assert set(hl.files()) == {"last_reserved_ip.0", "lock"}


def test_round_robin_wraps_skips_the_gateway_and_taken_addresses(hl):
    conf = hl.conf({"subnet": "10.1.0.0/29"})  # .1 gateway, .2-.6 allocatable, .7 broadcast
    assert hl.add(conf, "a") == ["10.1.0.2/29"]
    assert hl.add(conf, "b") == ["10.1.0.3/29"]
    assert hl.run("DEL", conf, "a").rc == 0
    assert hl.add(conf, "c") == ["10.1.0.4/29"], "a released address is not reused before the range wraps"
    assert (hl.dir / "last_reserved_ip.0").read_bytes() == b"10.1.0.4"
    assert hl.add(conf, "d") == ["10.1.0.5/29"]
    assert hl.add(conf, "e") == ["10.1.0.6/29"]
    assert hl.add(conf, "f") == ["10.1.0.2/29"], "wraps to the start, past the gateway"
    full = hl.run("ADD", conf, "g")
    assert full.rc == 1 and full.error["code"] == spec.TRY_AGAIN_LATER
    assert full.error["msg"] == ("failed to allocate for range 0: "
                                 "no IP addresses available in range set: 10.1.0.1-10.1.0.6")
    assert hl.held() == {"10.1.0.2": b"f\r\neth0", "10.1.0.3": b"b\r\neth0", "10.1.0.4": b"c\r\neth0",
                         "10.1.0.5": b"d\r\neth0", "10.1.0.6": b"e\r\neth0"}
    # last_reserved_ip decides where the next search starts, whoever wrote it
    assert hl.run("DEL", conf, "b").rc == 0 and hl.run("DEL", conf, "d").rc == 0
    (hl.dir / "last_reserved_ip.0").write_bytes(b"10.1.0.4")
    assert hl.add(conf, "h") == ["10.1.0.5/29"]
    (hl.dir / "last_reserved_ip.0").write_bytes(b"192.168.9.9")  # not in the range: start over
    assert hl.add(conf, "i") == ["10.1.0.3/29"]


def test_range_start_end_gateway_and_routes(hl):
    routes = [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254", "mtu": 1400}]
    conf = hl.conf({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.12",
                    "gateway": "10.1.0.11", "routes": routes})
    call = hl.run("ADD", conf, "a")
    assert call.out["ips"] == [{"address": "10.1.0.10/24", "gateway": "10.1.0.11"}]
    assert call.out["routes"] == routes, "1.1 keeps the route's new fields"
    assert hl.add(conf, "b") == ["10.1.0.12/24"], "the gateway inside the range is never handed out"
    full = hl.run("ADD", conf, "c")
    assert full.error["code"] == spec.TRY_AGAIN_LATER and "10.1.0.10-10.1.0.12" in full.error["msg"]
    old = hl.run("ADD", {**conf, "cniVersion": "1.0.0"}, "d", args="IP=10.1.0.11")
    assert old.error["code"] == spec.INVALID_CONFIG and "gateway" in old.error["msg"]
    assert hl.run("DEL", conf, "a").rc == 0
    v1 = hl.run("ADD", {**conf, "cniVersion": "1.0.0"}, "d")
    assert v1.out["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}]


def test_several_ranges_in_one_set_and_several_sets(hl):
    conf = hl.conf({"ranges": [
        [{"subnet": "10.1.0.0/30"}, {"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.5", "rangeEnd": "10.2.0.6",
                                     "gateway": "10.2.0.254"}],
        [{"subnet": "10.9.0.0/24"}],
    ]})
    assert hl.add(conf, "a") == ["10.1.0.2/30", "10.9.0.2/24"]
    b = hl.run("ADD", conf, "b")
    assert b.out["ips"] == [{"address": "10.2.0.5/24", "gateway": "10.2.0.254"},
                            {"address": "10.9.0.3/24", "gateway": "10.9.0.1"}], "the next range of the set"
    assert hl.add(conf, "c") == ["10.2.0.6/24", "10.9.0.4/24"]
    assert (hl.dir / "last_reserved_ip.0").read_bytes() == b"10.2.0.6"
    assert (hl.dir / "last_reserved_ip.1").read_bytes() == b"10.9.0.4"
    full = hl.run("ADD", conf, "d")
    assert full.error["code"] == spec.TRY_AGAIN_LATER
    assert full.error["msg"].endswith("range set: 10.1.0.1-10.1.0.2,10.2.0.5-10.2.0.6")
    assert hl.run("DEL", conf, "a").rc == 0
    held = hl.held()
    taken = hl.run("ADD", conf, "d", args="IP=10.9.0.3")
    assert taken.error["msg"].startswith("failed to allocate for range 1: requested IP address 10.9.0.3")
    assert hl.held() == held, "a failed ADD releases what it took from earlier sets"
    assert hl.add(conf, "d") == ["10.1.0.2/30", "10.9.0.5/24"], "wraps to the set's first range"


def test_ipv6_and_dual_stack(hl):
    v6 = hl.conf({"ranges": [[{"subnet": "fd00:10::/64"}]]})
    call = hl.run("ADD", v6, "a")
    assert call.out["ips"] == [{"address": "fd00:10::2/64", "gateway": "fd00:10::1"}]
    assert hl.files()["fd00:10::2"] == b"a\r\neth0"
    hl.name = "dual"
    dual = hl.conf({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:20::/120", "rangeEnd": "fd00:20::ff"}]]})
    call = hl.run("ADD", dual, "a")
    assert call.out["ips"] == [{"address": "10.1.0.2/24", "gateway": "10.1.0.1"},
                               {"address": "fd00:20::2/120", "gateway": "fd00:20::1"}]
    assert hl.files()["last_reserved_ip.1"] == b"fd00:20::2"
    old = hl.run("ADD", {**dual, "cniVersion": "0.3.1"}, "b")
    assert [ip["version"] for ip in old.out["ips"]] == ["4", "6"]
    assert hl.run("DEL", dual, "a").rc == 0
    assert set(hl.held()) == {"10.1.0.3", "fd00:20::3"}
    # IPv6 has no broadcast: the default rangeEnd is the last address
    hl.name = "tiny6"
    tiny = hl.conf({"ranges": [[{"subnet": "fd00:30::/126"}]]})
    assert [hl.add(tiny, c)[0] for c in "xy"] == ["fd00:30::2/126", "fd00:30::3/126"]


def test_result_versions(hl):
    for version in ("0.3.0", "0.3.1", "0.4.0"):
        call = hl.run("ADD", hl.conf(version=version), f"v{version}")
        assert call.out["cniVersion"] == version and call.out["ips"][0]["version"] == "4"
    for version in ("1.0.0", "1.1.0"):
        call = hl.run("ADD", hl.conf(version=version), f"v{version}")
        assert call.out["cniVersion"] == version and "version" not in call.out["ips"][0]


def test_resolv_conf_fills_dns(hl):
    resolv = hl.box.tmp / "resolv.conf"
    resolv.write_text("# comment\n; other\nnameserver 10.0.0.10\nnameserver fd00::10\ndomain cluster.local\n"
                      "search a.svc b.svc\nsearch c.svc\noptions ndots:5 edns0\nbogus\n")
    call = hl.run("ADD", hl.conf({"subnet": "10.1.0.0/24", "resolvConf": str(resolv)}), "a")
    assert call.out["dns"] == {"nameservers": ["10.0.0.10", "fd00::10"], "domain": "cluster.local",
                               "search": ["a.svc", "b.svc", "c.svc"], "options": ["ndots:5", "edns0"]}
    missing = hl.run("ADD", hl.conf({"subnet": "10.1.0.0/24", "resolvConf": "/nonexistent/resolv"}), "b")
    assert missing.error["code"] == spec.IO_FAILURE
    assert not hl.held().get("10.1.0.3")


# -- requested addresses ------------------------------------------------------------------
def test_requested_ips(hl):
    conf = hl.conf({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]})
    with_caps = {**conf, "runtimeConfig": {"ips": ["10.1.0.7/24", "fd00::7"]}}
    call = hl.run("ADD", with_caps, "a")
    assert call.out["ips"] == [{"address": "10.1.0.7/24", "gateway": "10.1.0.1"},
                               {"address": "fd00::7/64", "gateway": "fd00::1"}]
    assert hl.files()["last_reserved_ip.0"] == b"10.1.0.7"
    assert hl.add(conf, "b", args="IgnoreUnknown=1;IP=10.1.0.9;K8S_POD_NAME=p") == ["10.1.0.9/24", "fd00::8/64"]
    assert hl.add(conf, "c") == ["10.1.0.10/24", "fd00::9/64"], "round robin goes on after a requested address"
    cases = [
        ("IP=10.1.0.9", spec.TRY_AGAIN_LATER, "requested IP address 10.1.0.9 is not available in range set"),
        ("IP=10.7.0.1", spec.INVALID_CONFIG, "failed to allocate all requested IPs: 10.7.0.1"),
        ("IP=10.1.0.1", spec.INVALID_CONFIG, "requested ip 10.1.0.1 is subnet's gateway"),
        ("IP=10.1.0.255", spec.INVALID_CONFIG, "failed to allocate all requested IPs: 10.1.0.255"),
        ("IP=not-an-ip", spec.INVALID_CONFIG, "cannot understand ip"),
        ("IP=fe80::1%../../x", spec.INVALID_CONFIG, "cannot understand ip"),
    ]
    for args, code, msg in cases:
        call = hl.run("ADD", conf, "d", args=args)
        assert call.rc == 1 and call.error["code"] == code and msg in call.error["msg"], (args, call.raw)
    assert not any(v.startswith(b"d\r\n") for v in hl.held().values()), "a failed ADD keeps nothing"
    args_cni = {**conf, "args": {"cni": {"ips": ["10.1.0.50"]}}}
    assert hl.add(args_cni, "e")[0] == "10.1.0.50/24"
    # a requested address is not subject to the duplicate check, as upstream
    assert hl.add(conf, "e", "eth1", args="IP=10.1.0.51")[0] == "10.1.0.51/24"


# -- DEL, CHECK, errors -------------------------------------------------------------------
def test_duplicate_add_is_refused_and_del_is_idempotent(hl):
    conf = hl.conf()
    assert hl.add(conf, "a") == ["10.1.0.2/24"]
    again = hl.run("ADD", conf, "a")
    assert again.error["code"] == spec.INVALID_ENVIRONMENT
    assert again.error["msg"] == ("failed to allocate for range 0: 10.1.0.2 has been allocated to a, "
                                  "duplicate allocation is not allowed")
    assert hl.add(conf, "a", "eth1") == ["10.1.0.3/24"], "another interface of the same container"
    assert hl.run("DEL", conf, "a", "eth1").rc == 0
    assert hl.held() == {"10.1.0.2": b"a\r\neth0"}
    for _ in range(2):
        assert hl.run("DEL", conf, "a").rc == 0
        assert hl.held() == {}
    assert hl.run("DEL", conf, "never-added").rc == 0
    hl.name = "fresh"
    assert hl.run("DEL", hl.conf(), "a").rc == 0, "DEL on a network that never allocated"


def test_check(hl):
    conf = hl.conf(version="1.0.0")
    assert hl.run("CHECK", conf, "a").error["code"] == spec.UNKNOWN_CONTAINER
    hl.add(conf, "a")
    assert hl.run("CHECK", conf, "a").rc == 0
    assert hl.run("CHECK", conf, "a", "eth1").error["code"] == spec.UNKNOWN_CONTAINER
    assert hl.run("CHECK", conf, "b").error["msg"] == "host-local: Failed to find address added by container b"
    assert hl.run("CHECK", {**conf, "cniVersion": "0.3.1"}, "a").error["code"] == spec.INCOMPATIBLE_VERSION


def test_old_files_holding_only_the_container_id(hl):
    conf = hl.conf()
    hl.dir.mkdir(parents=True)
    (hl.dir / "10.1.0.2").write_bytes(b"old-ctr\n")
    assert hl.run("CHECK", conf, "old-ctr", "eth3").rc == 0, "matched by ID alone"
    assert hl.run("ADD", conf, "old-ctr").error["code"] == spec.INVALID_ENVIRONMENT
    assert hl.add(conf, "new") == ["10.1.0.3/24"]
    assert hl.run("DEL", conf, "old-ctr").rc == 0
    assert set(hl.held()) == {"10.1.0.3"}


def test_config_errors_are_code_7_and_stay_inside_data_dir(hl, tmp_path):
    base = {"subnet": "10.1.0.0/24"}
    bad_ipam = [
        {"subnet": "10.1.0.1/24"},  # host bits
        {"subnet": "10.1.0.0/31"},
        {"subnet": "fd00::/127"},
        {"subnet": "10.1.0.0"},
        {"subnet": "10.1.0.0/255.255.255.0"},
        {"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"},
        {"subnet": "10.1.0.0/24", "rangeEnd": "10.2.0.1"},
        {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.9", "rangeEnd": "10.1.0.8"},
        {"subnet": "10.1.0.0/24", "gateway": "fd00::1"},
        {"ranges": []},
        {"ranges": [[]]},
        {"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]},
        {"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"}]]},
        {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.128/25"}]]},
        {**base, "routes": [{"gw": "10.1.0.1"}]},
        {**base, "routes": [{"dst": "10.0.0.0"}]},
        {**base, "dataDir": "relative/dir"},
        {"rangeStart": "10.1.0.2"},  # no subnet: no range at all
    ]
    for ipam in bad_ipam:
        call = hl.run("ADD", hl.conf(ipam), "a")
        assert call.rc == 1 and call.error["code"] == spec.INVALID_CONFIG, (ipam, call.raw)
    no_ipam = hl.conf()
    del no_ipam["ipam"]
    assert hl.run("ADD", no_ipam, "a").error["msg"] == "IPAM config missing 'ipam' key"
    for name in ("../escape", "a/b", "..", ".", "x..y", ""):
        call = hl.run("ADD", {**hl.conf(), "name": name}, "a")
        assert call.error["code"] == spec.INVALID_CONFIG, name
    for command in ("DEL", "CHECK"):
        assert hl.run(command, {**hl.conf(version="1.0.0"), "name": "../escape"}, "a").error["code"] == 7
    assert not hl.data.exists() and not (tmp_path / "escape").exists()


# -- STATUS and GC (1.1) ------------------------------------------------------------------
def test_status(hl):
    conf = hl.conf({"subnet": "10.1.0.0/30"})  # one address: .2
    assert hl.exe("host-local", "STATUS", conf).rc == 0
    hl.add(conf, "a")
    call = hl.run("STATUS", conf)
    assert call.error["code"] == spec.NOT_AVAILABLE and "no IP addresses available" in call.error["msg"]
    hl.run("DEL", conf, "a")
    assert hl.run("STATUS", conf).rc == 0
    not_a_dir = hl.box.tmp / "file"
    not_a_dir.write_text("")
    call = hl.run("STATUS", hl.conf({"subnet": "10.1.0.0/24", "dataDir": str(not_a_dir)}))
    assert call.error["code"] == spec.NOT_AVAILABLE and "not usable" in call.error["msg"]
    assert hl.run("STATUS", hl.conf({"subnet": "10.1.0.1/24"})).error["code"] == spec.INVALID_CONFIG
    assert hl.run("STATUS", hl.conf(version="1.0.0")).error["code"] == spec.INCOMPATIBLE_VERSION


def test_gc_releases_what_is_not_a_valid_attachment(hl):
    conf = hl.conf({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]})
    for cid, ifname in (("keep", "eth0"), ("keep", "eth1"), ("gone", "eth0"), ("half", "eth0"), ("half", "eth1")):
        hl.add(conf, cid, ifname)
    (hl.dir / "10.1.0.100").write_bytes(b"keep")  # an old file: the ID alone
    (hl.dir / "10.1.0.101").write_bytes(b"gone-too")
    (hl.dir / ".tmp.1.2.dead").write_bytes(b"x\r\ny")  # a crashed writer's leftover
    valid = [{"containerID": "keep", "ifname": "eth0"}, {"containerID": "keep", "ifname": "eth1"},
             {"containerID": "half", "ifname": "eth1"}]
    call = hl.exe("host-local", "GC", {**conf, "cni.dev/valid-attachments": valid})
    assert call.rc == 0, call.raw + call.stderr
    owners = sorted(set(hl.held().values()))
    assert owners == [b"half\r\neth1", b"keep", b"keep\r\neth0", b"keep\r\neth1"]
    assert len(hl.held()) == 7 and not list(hl.dir.glob(".tmp.*"))
    assert hl.run("GC", {**conf, "cni.dev/valid-attachments": []}).rc == 0
    assert hl.held() == {}
    hl.add(conf, "x")
    assert hl.run("GC", conf).error["code"] == spec.INVALID_CONFIG, "no list: refuse rather than release all"
    assert len(hl.held()) == 2
    assert hl.run("GC", {**conf, "cniVersion": "1.0.0", "cni.dev/valid-attachments": []}).error["code"] == 1


# -- the reference plugin -----------------------------------------------------------------
DIFFERENTIAL = [
    {"subnet": "10.1.0.0/24"},
    {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.100", "rangeEnd": "10.1.0.110", "gateway": "10.1.0.254",
     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.96.0.0/12", "gw": "10.1.0.254"}]},
    {"ranges": [[{"subnet": "fd00:1::/64"}]],
     "routes": [{"dst": "::/0"}, {"dst": "fd00:0:0::5/64", "gw": "fd00:1:0::1"}]},  # printed canonical
    {"ranges": [[{"subnet": "10.2.0.0/30"}, {"subnet": "10.3.0.0/24"}], [{"subnet": "fd00:2::/120"}]]},
    {"subnet": "10.4.0.0/16", "ranges": [[{"subnet": "10.5.0.0/24", "rangeStart": "10.5.0.1"}]]},
]


@needs_reference
@pytest.mark.parametrize("version", ["1.0.0", "0.4.0"])
def test_same_results_as_the_reference(hl, version):
    resolv = hl.box.tmp / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.10\nsearch svc.local\noptions ndots:5\n")
    for i, ipam in enumerate(DIFFERENTIAL):
        results = {}
        for side in ("ours", "ref"):
            hl.name = f"n{i}-{side}"
            conf = hl.conf({**ipam, "resolvConf": str(resolv)}, version=version)
            if side == "ref":
                runs = [hl.exe(REF, "ADD", conf, cid) for cid in ("a", "b", "c")]
            else:  # the first through our executable, the rest in-process (the same code, faster)
                runs = [hl.exe("host-local", "ADD", conf, "a"), hl.run("ADD", conf, "b"), hl.run("ADD", conf, "c")]
            assert all(r.rc == 0 for r in runs), [r.raw for r in runs]
            results[side] = ([r.out for r in runs], {k: v for k, v in hl.files().items() if k != "lock"})
        assert results["ours"] == results["ref"], ipam


@needs_reference
def test_the_reference_reads_our_store_and_we_read_its(hl):
    conf = hl.conf({"subnet": "10.1.0.0/29"}, version="1.0.0")
    assert hl.add(conf, "ours-1") == ["10.1.0.2/29"]
    ref = hl.exe(REF, "ADD", conf, "ref-1")
    assert ref.out["ips"][0]["address"] == "10.1.0.3/29", "the reference continues after our last_reserved_ip"
    taken = hl.exe(REF, "ADD", conf, "ref-2", args="IP=10.1.0.2")
    assert taken.rc != 0 and "10.1.0.2 is not available" in taken.out["msg"]
    assert hl.exe(REF, "CHECK", conf, "ours-1").rc == 0
    dup = hl.exe(REF, "ADD", conf, "ours-1")
    assert dup.rc != 0 and dup.out["msg"] == hl.run("ADD", conf, "ours-1").error["msg"]
    # and we read what the reference wrote
    assert hl.add(conf, "ours-2") == ["10.1.0.4/29"]
    ours_taken = hl.run("ADD", conf, "ours-3", args="IP=10.1.0.3")
    assert ours_taken.error["code"] == spec.TRY_AGAIN_LATER
    assert ours_taken.error["msg"] == taken.out["msg"].replace("10.1.0.2", "10.1.0.3")
    assert hl.run("CHECK", conf, "ref-1").rc == 0
    # each side DELs what the other ADDed
    assert hl.run("DEL", conf, "ref-1").rc == 0
    assert hl.exe(REF, "DEL", conf, "ours-1").rc == 0
    assert hl.held() == {"10.1.0.4": b"ours-2\r\neth0"}
    assert hl.exe(REF, "CHECK", conf, "ours-1").rc != 0
    # exhaustion: the same message, whoever fills the range
    for cid in ("r5", "r6"):
        assert hl.exe(REF, "ADD", conf, cid).rc == 0
    assert [hl.add(conf, cid)[0] for cid in ("o3", "o4")] == ["10.1.0.2/29", "10.1.0.3/29"]
    assert len(hl.held()) == 5
    ref_full, ours_full = hl.exe(REF, "ADD", conf, "z"), hl.run("ADD", conf, "z")
    assert ref_full.rc != 0 and ours_full.error["msg"] == ref_full.out["msg"]


# -- concurrency --------------------------------------------------------------------------
def test_fifty_parallel_executables_never_share_an_address(hl):
    conf = hl.conf({"subnet": "10.1.0.0/24"})
    with ThreadPoolExecutor(max_workers=50) as pool:
        calls = list(pool.map(lambda i: hl.exe("host-local", "ADD", conf, f"par-{i}"), range(50)))
    assert all(c.rc == 0 for c in calls), [c.raw + c.stderr for c in calls if c.rc]
    ips = [c.out["ips"][0]["address"] for c in calls]
    assert len(set(ips)) == 50
    held = hl.held()
    assert len(held) == 50 and sorted(held.values()) == sorted(f"par-{i}\r\neth0".encode() for i in range(50))
    assert {f"{k}/24" for k in held} == set(ips)


def test_fifty_parallel_threads_in_one_process_never_share_an_address(hl):
    conf = hl.conf({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]})
    start = threading.Barrier(50)

    def add(i: int) -> CniCall:
        start.wait()
        return hl.run("ADD", conf, f"thr-{i}")

    with ThreadPoolExecutor(max_workers=50) as pool:
        calls = list(pool.map(add, range(50)))
    assert all(c.rc == 0 for c in calls), [c.raw for c in calls if c.rc]
    for family in (0, 1):
        assert len({c.out["ips"][family]["address"] for c in calls}) == 50
    assert len(hl.held()) == 100
    with ThreadPoolExecutor(max_workers=50) as pool:
        dels = list(pool.map(lambda i: hl.run("DEL", conf, f"thr-{i}"), range(50)))
    assert all(d.rc == 0 for d in dels) and hl.held() == {}


@needs_reference
def test_parallel_adds_from_both_plugins_share_the_lock(hl):
    conf = hl.conf({"subnet": "10.1.0.0/24"}, version="1.0.0")
    jobs = [(REF if i % 2 else "host-local", f"mix-{i}") for i in range(30)]
    with ThreadPoolExecutor(max_workers=30) as pool:
        calls = list(pool.map(lambda job: hl.exe(job[0], "ADD", conf, job[1]), jobs))
    assert all(c.rc == 0 for c in calls), [c.raw + c.stderr for c in calls if c.rc]
    assert len({c.out["ips"][0]["address"] for c in calls}) == 30 and len(hl.held()) == 30
