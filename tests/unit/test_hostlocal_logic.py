"""host-local IPAM's allocation logic (netsim.cni.hostlocal) without a namespace: range parsing,
the round-robin order, reservation, release and exhaustion, on a fake of its per-network store
and on its real file store in a temporary directory.  tests/kernel/test_cni_hostlocal.py calls
the plugin as a runtime does, against the reference plugin."""

from __future__ import annotations

import ipaddress

import pytest

from netsim.cni import hostlocal, spec


class FakeStore:
    """hostlocal.Store's interface over dicts: held addresses and last_reserved_ip per set."""

    def __init__(self):
        self.files: dict = {}
        self.last: dict[int, ipaddress.IPv4Address] = {}

    def reserve(self, addr, container_id, ifname, range_id) -> bool:
        if addr in self.files:
            return False
        self.files[addr] = f"{container_id}\r\n{ifname}".encode()
        self.last[range_id] = addr
        return True

    def last_reserved(self, range_id):
        return self.last.get(range_id)

    def release(self, addr) -> bool:
        return self.files.pop(addr, None) is not None


def request(cid="c1", ifname="eth0", command="ADD", **config) -> spec.Request:
    return spec.Request(command=command, container_id=cid, netns="/x", ifname=ifname, args={}, path=[],
                        config={"cniVersion": "1.1.0", "name": "net", "type": "host-local", **config},
                        env={}, stdin=b"")


def rs(*ranges) -> hostlocal.RangeSet:
    return hostlocal.parse_range_set(0, list(ranges))


def allocate(store, ranges, cid, requested=None) -> str:
    return hostlocal._allocate(store, dict(store.files), ranges, 0, request(cid), requested)["address"]


def test_a_range_defaults_to_the_subnet_after_the_gateway():
    r = hostlocal.parse_range({"subnet": "10.1.0.0/29"})
    assert (str(r), str(r.gateway), r.size()) == ("10.1.0.1-10.1.0.6", "10.1.0.1", 5)
    r = hostlocal.parse_range({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.12",
                               "gateway": "10.1.0.254"})
    assert (str(r), r.size()) == ("10.1.0.10-10.1.0.12", 3)
    v6 = hostlocal.parse_range({"subnet": "fd00::/126"})
    assert str(v6) == "fd00::1-fd00::3" and v6.size() == 2  # no broadcast in IPv6; the gateway is ::1


@pytest.mark.parametrize(("raw", "words"), [
    ({"subnet": "10.1.0.0/31"}, "too small to allocate from"),
    ({"subnet": "10.1.0.1/24"}, "host bits set"),
    ({"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}, "RangeStart 10.2.0.1 not in network 10.1.0.0/24"),
    ({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.9", "rangeEnd": "10.1.0.5"}, "rangeEnd is before rangeStart"),
    ({"subnet": "10.1.0.0/24", "gateway": "fd00::1"}, "not of the address family"),
])
def test_bad_ranges_are_invalid_config_naming_the_problem(raw, words):
    with pytest.raises(spec.CNIError) as info:
        hostlocal.parse_range(raw)
    assert info.value.code == spec.INVALID_CONFIG
    assert words in info.value.msg + info.value.details


def test_overlapping_and_mixed_ranges_in_a_set_are_refused():
    with pytest.raises(spec.CNIError, match="overlap"):
        rs({"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"})
    with pytest.raises(spec.CNIError, match="mixed address families"):
        rs({"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/120"})


def test_candidates_go_round_robin_from_the_last_reserved_and_skip_gateways():
    ranges = rs({"subnet": "10.1.0.0/29"}, {"subnet": "10.2.0.0/30"})
    order = [str(ipaddress.IPv4Address(v)) for _, v in hostlocal.candidates(ranges, ipaddress.ip_address("10.1.0.5"))]
    assert order == ["10.1.0.6", "10.2.0.2", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"]
    fresh = [str(ipaddress.IPv4Address(v)) for _, v in hostlocal.candidates(ranges, None)]
    assert fresh[:2] == ["10.1.0.2", "10.1.0.3"] and "10.1.0.1" not in fresh and "10.2.0.1" not in fresh


def test_allocation_never_gives_an_address_twice_and_reports_exhaustion():
    store, ranges = FakeStore(), rs({"subnet": "10.1.0.0/29"})
    got = [allocate(store, ranges, f"c{i}") for i in range(5)]
    assert got == [f"10.1.0.{i}/29" for i in range(2, 7)]
    with pytest.raises(spec.CNIError) as info:
        allocate(store, ranges, "c5")
    assert info.value.code == spec.TRY_AGAIN_LATER and "no IP addresses available" in info.value.msg
    store.release(ipaddress.ip_address("10.1.0.4"))
    assert allocate(store, ranges, "c6") == "10.1.0.4/29"  # the only free one, found by wrapping round


def test_a_second_add_for_the_same_attachment_is_refused():
    store, ranges = FakeStore(), rs({"subnet": "10.1.0.0/29"})
    allocate(store, ranges, "c1")
    with pytest.raises(spec.CNIError) as info:
        allocate(store, ranges, "c1")
    assert info.value.code == spec.INVALID_ENVIRONMENT and "duplicate allocation is not allowed" in info.value.msg


def test_a_requested_address_is_taken_or_refused():
    store, ranges = FakeStore(), rs({"subnet": "10.1.0.0/29"})
    assert allocate(store, ranges, "c1", ipaddress.ip_address("10.1.0.5")) == "10.1.0.5/29"
    with pytest.raises(spec.CNIError) as info:
        allocate(store, ranges, "c2", ipaddress.ip_address("10.1.0.5"))
    assert info.value.code == spec.TRY_AGAIN_LATER and "not available" in info.value.msg
    with pytest.raises(spec.CNIError, match="is subnet's gateway"):
        allocate(store, ranges, "c3", ipaddress.ip_address("10.1.0.1"))


def test_add_del_and_gc_on_the_file_store_in_a_temporary_directory(tmp_path):
    ipam = {"type": "host-local", "dataDir": str(tmp_path), "ranges": [[{"subnet": "10.1.0.0/29"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}
    result = hostlocal.cmd_add(request("c1", ipam=ipam))
    assert result["ips"] == [{"address": "10.1.0.2/29", "gateway": "10.1.0.1"}]
    assert result["routes"] == [{"dst": "0.0.0.0/0"}]
    assert (tmp_path / "net" / "10.1.0.2").read_bytes() == b"c1\r\neth0"
    assert (tmp_path / "net" / "last_reserved_ip.0").read_text() == "10.1.0.2"
    hostlocal.cmd_add(request("c2", ipam=ipam))
    hostlocal.cmd_check(request("c2", ipam=ipam))
    hostlocal.cmd_del(request("c1", ipam=ipam))
    assert not (tmp_path / "net" / "10.1.0.2").exists()
    assert hostlocal.cmd_add(request("c3", ipam=ipam))["ips"][0]["address"] == "10.1.0.4/29"  # round-robin on
    gc = request("x", ipam=ipam, **{hostlocal.VALID_ATTACHMENTS: [{"containerID": "c3", "ifname": "eth0"}]})
    hostlocal.cmd_gc(gc)
    assert sorted(p.name for p in (tmp_path / "net").iterdir() if p.name[0].isdigit()) == ["10.1.0.4"]
    with pytest.raises(spec.CNIError) as info:
        hostlocal.cmd_check(request("c2", ipam=ipam))
    assert info.value.code == spec.UNKNOWN_CONTAINER
