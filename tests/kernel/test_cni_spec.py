"""The spec layer every plugin shares: versions, environment checks, error JSON."""


from netsim.cni import spec


def test_version_lists_supported_versions(cni_sandbox):
    call = cni_sandbox.call("bridge", "VERSION", {"cniVersion": "1.0.0"})
    assert call.rc == 0
    assert call.out == {"cniVersion": "1.0.0", "supportedVersions": list(spec.SUPPORTED_VERSIONS)}


def test_errors_carry_the_spec_codes(cni_sandbox):
    netns = cni_sandbox.container("c1")
    base = {"cniVersion": "1.0.0", "name": "n", "type": "bridge"}
    cases = [
        ({**base, "cniVersion": "0.2.0"}, {"container_id": "abc", "netns": netns}, 1),
        (base, {"container_id": "-bad", "netns": netns}, 4),
        (base, {"container_id": "a/b", "netns": netns}, 4),
        (base, {"container_id": "abc", "netns": "/nonexistent/ns"}, 4),
        (base, {"container_id": "abc", "netns": netns, "ifname": "a" * 16}, 4),
        (base, {"container_id": "abc", "netns": netns, "ifname": "et:h0"}, 4),
        (base, {"container_id": "abc", "netns": netns, "ifname": "eth 0"}, 4),
        (base, {"container_id": "", "netns": netns}, 4),
        ({**base, "cniVersion": "0.3.1"}, {"container_id": "abc", "netns": netns, "command": "CHECK"}, 1),
        ({**base, "cniVersion": "1.0.0"}, {"command": "STATUS"}, 1),
    ]
    for conf, kw, code in cases:
        command = kw.pop("command", "ADD")
        call = cni_sandbox.call("bridge", command, conf, **kw)
        assert call.rc != 0, (conf, kw)
        assert call.error["code"] == code, (conf, kw, call.raw)
        assert call.error["msg"]


def test_undecodable_config_is_code_6(cni_sandbox):
    netns = cni_sandbox.container("c1")
    call = cni_sandbox.call("bridge", "ADD", {}, container_id="abc", netns=netns, stdin=b"{not json")
    assert call.rc != 0 and call.error["code"] == 6


def test_unknown_command_is_code_4(cni_sandbox):
    call = cni_sandbox.call("bridge", "FROB", {"cniVersion": "1.0.0", "name": "n", "type": "bridge"})
    assert call.rc != 0 and call.error["code"] == 4
