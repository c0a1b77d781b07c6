"""Property-based fuzzing (hypothesis) of what runtimes hand netsim's CNI plugins: stdin and
environment, mutated from valid ones, each call in a fresh container namespace.  A CNI call
answers valid JSON, and an error carries one of the spec's codes, and never the catch-all for
an exception no plugin code anticipated.  Scenario files and manifests: tests/unit/test_fuzz.py."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netsim import kernel
from netsim.cni import spec
from tests.conftest import REPO
from tests.fuzzing import FUZZ, json_values, mutated

SANDBOXED = ("dataDir", "subnetFile")


EXAMPLE_NUMBER = itertools.count()


SPEC_CODES = {spec.INCOMPATIBLE_VERSION, spec.UNSUPPORTED_FIELD, spec.UNKNOWN_CONTAINER, spec.INVALID_ENVIRONMENT,
              spec.IO_FAILURE, spec.DECODE_FAILURE, spec.INVALID_CONFIG, spec.TRY_AGAIN_LATER, spec.NOT_AVAILABLE,
              spec.LIMITED_CONNECTIVITY, spec.INTERNAL}  # where a plugin writes: always the test's directory


def _configs(tmp: Path) -> dict[str, dict]:
    ipam = {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]], "dataDir": str(tmp / "ipam")}
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.99.0.5/24", "gateway": "10.99.0.1", "interface": 0}]}
    base = {"cniVersion": "1.1.0", "name": "fuzz"}
    return {
        "loopback": {**base, "type": "loopback"},
        "host-local": {**base, "type": "host-local", "ipam": ipam},
        "bridge": {**base, "type": "bridge", "bridge": "fz0", "isGateway": True, "ipMasq": True, "ipam": ipam},
        "portmap": {**base, "type": "portmap", "capabilities": {"portMappings": True},
                    "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
                    "prevResult": prev},
        "flannel": {**base, "type": "flannel", "subnetFile": str(tmp.parent / "subnet.env"),
                    "dataDir": str(tmp / "flannel"),
                    "ipam": {"dataDir": str(tmp / "ipam")}, "delegate": {"isDefaultGateway": True}},
        "netsim-policy": {**base, "type": "netsim-policy", "prevResult": prev},
    }


def _nothing_left_of(env: dict, container: str, tmp: Path) -> None:
    if os.path.exists(container):
        with kernel.Namespace.at(container) as ns:
            links = sorted(ns.links())
        assert links == ["lo"], f"a failed ADD and its DEL left {links} in the container"
    held = [p for p in (tmp / "ipam").rglob("*") if p.is_file() and p.read_text().startswith(env["CNI_CONTAINERID"])]
    assert not held, f"a failed ADD and its DEL left addresses held: {held}"


@pytest.fixture(scope="module")
def cni_box(tmp_path_factory):
    """A runtime namespace (the node) and a container namespace, made here; the fuzzed plugins
    run in-process with the test's thread inside the runtime namespace."""
    from tests.conftest import unique_name

    tmp = tmp_path_factory.mktemp("cni-fuzz")
    (tmp / "subnet.env").write_text("FLANNEL_NETWORK=10.99.0.0/16\nFLANNEL_SUBNET=10.99.0.1/24\n"
                                    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    prefix = f"nsim.{unique_name('fz')}"
    runtime, container = f"{prefix}.node", f"{prefix}.pod"
    kernel.Namespace.create(runtime).close()
    yield tmp, runtime, kernel.netns_path(container)
    kernel.remove_netns([container, runtime])


env_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\0"), max_size=20)


@FUZZ
@given(data=st.data())
def test_cni_answers_every_input_with_a_spec_error_code(cni_box, data):
    tmp, runtime, container = cni_box
    # Each example writes under a directory of its own: what one leaves is its own doing.
    tmp = tmp / f"example{next(EXAMPLE_NUMBER)}"
    configs = _configs(tmp)
    plugin = data.draw(st.sampled_from(sorted(configs)))
    stdin_kind = data.draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "bytes"]))
    if stdin_kind == "mutated":
        stdin = json.dumps(data.draw(mutated(configs[plugin], keep=SANDBOXED))).encode()
    elif stdin_kind == "json":
        stdin = json.dumps(data.draw(json_values)).encode()
    else:
        stdin = data.draw(st.binary(max_size=64))
    # A valid environment with at most one variable fuzzed, so most calls reach the plugin.
    env = {"CNI_COMMAND": data.draw(st.sampled_from(["ADD", "ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"])),
           "CNI_CONTAINERID": "fuzz1", "CNI_NETNS": container, "CNI_IFNAME": "eth0",
           "CNI_PATH": str(REPO / "cni_plugins"), "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    fuzzed = data.draw(st.sampled_from([None, None, "CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME",
                                        "CNI_ARGS"]))
    if fuzzed is not None:
        env[fuzzed] = data.draw({
            "CNI_COMMAND": st.sampled_from(["add", "", "ADD ", "DELETE"]),
            "CNI_CONTAINERID": st.sampled_from(["../../etc", "", ".hidden", "a" * 300, "x/y"]),
            "CNI_NETNS": st.sampled_from([str(tmp / "missing"), "", "/proc/thread-self/ns/net", str(tmp)]),
            "CNI_IFNAME": st.sampled_from(["../eth0", "", "a" * 16, "eth0:1", ".", "lo"]),
            "CNI_ARGS": st.sampled_from(["IP=10.99.0.9", "IP=10.98.0.9", "IP=x", "K8S_POD_NAME=x;IgnoreUnknown=1",
                                         "=x", ";;"]),
        }[fuzzed] | env_text)
    # A fresh container namespace per call: each ADD goes as deep as its input lets it.
    container_name = container.rsplit("/", 1)[1]
    kernel.Namespace.create(container_name).close()
    try:
        with kernel.entered(kernel.netns_path(runtime)):
            code, out = spec.run(plugin, env, stdin)
            if env["CNI_COMMAND"] == "ADD" and plugin in ("bridge", "flannel", "host-local"):
                # A runtime answers a failed ADD with a DEL, and a pod's end is one too: after
                # it nothing of the container is left: no interface in it, no address held.
                spec.run(plugin, {**env, "CNI_COMMAND": "DEL"}, stdin)
                _nothing_left_of(env, container, tmp)
    finally:
        kernel.remove_netns([container_name])
    if os.environ.get("NETSIM_FUZZ_TRACE"):
        print("FUZZ", plugin, env["CNI_COMMAND"], code, out[:100])
    if code == 0:
        if out.strip():
            json.loads(out)
        return
    answer = json.loads(out)
    assert isinstance(answer["code"], int) and answer.get("msg"), answer
    assert answer["code"] in SPEC_CODES, answer
    # 999 is upstream's code for some runtime conditions too (an interface name taken); an
    # exception no plugin code anticipated is a bug.
    assert answer["msg"] != spec.UNEXPECTED, f"{plugin} {env['CNI_COMMAND']}: {answer} for {stdin!r}"


