"""The CNI choice (netsim.model.cnimode) and what follows from it: the conflist each node
chains, whether NetworkPolicy is enforced, the warning a NetworkPolicy write carries (netsim
apply, and the Warning header the real kubectl prints) and what `netsim policy explain` says.
tests/e2e/test_cni_modes.py: the same on a real cluster, with packets."""

from __future__ import annotations

import pytest

from netsim.api import admission, registry
from netsim.api.store.sqlite import SQLiteStore
from netsim.apiserver.app import warning_header
from netsim.cli import verbs
from netsim.cli.cluster import _cni
from netsim.cli.policy_cmd import explain_text
from netsim.model import cnimode, state
from netsim.node import podnet, policy
from tests.unit.fakes import MemoryStore

NETPOL = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"""
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n"


def test_each_cni_chains_its_plugins_and_enforcement_follows_the_policy_plugin():
    assert cnimode.mode("canal").plugins == ("flannel", "portmap", "netsim-policy")
    assert cnimode.mode("flannel").plugins == ("flannel", "portmap")
    assert cnimode.mode("calico").plugins == ("calico", "portmap", "netsim-policy")
    assert [n for n in cnimode.MODES if cnimode.enforces_policy(n)] == ["canal", "calico"]
    assert cnimode.mode(None).name == cnimode.mode("").name == "canal"  # the default, as the scenario's
    with pytest.raises(ValueError, match="networking.cni: 'weave' is not known; use 'canal', 'flannel', 'calico'"):
        cnimode.mode("weave")


def test_the_warning_and_the_explain_note_only_where_policy_is_not_enforced():
    assert cnimode.policy_warning("canal") is None and cnimode.policy_warning("calico") is None
    assert cnimode.not_enforced("canal") is None
    w = cnimode.policy_warning("flannel")
    assert "not enforced" in w and "CNI is flannel" in w and "canal or calico enforces it" in w
    assert "(flannel) does not enforce NetworkPolicy" in cnimode.not_enforced("flannel")


@pytest.mark.parametrize("cni, chain", [("canal", ["flannel", "portmap", "netsim-policy"]),
                                        ("flannel", ["flannel", "portmap"])])
def test_the_node_conflist_chains_what_the_mode_says(tmp_path, cni, chain):
    node = podnet.NodePods("c", "n1", "nsim.c.n1", tmp_path / "n1", cni=cni)
    conf = node.conflist()
    assert [p["type"] for p in conf["plugins"]] == chain
    assert conf["name"] == podnet.NETWORK and conf["plugins"][0]["subnetFile"] == str(node.subnet_env)


def test_a_mode_whose_plugin_the_node_cannot_configure_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(cnimode.MODES, "weave", cnimode.Mode("weave", ("weave", "portmap"), "weave net"))
    node = podnet.NodePods("c", "n1", "nsim.c.n1", tmp_path / "n1", cni="weave")
    with pytest.raises(RuntimeError, match=r"cni weave: no network config for plugin\(s\) weave on this node"):
        node.conflist()


def policy_doc(name="deny-all") -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"podSelector": {}}}


def test_admission_warns_of_a_networkpolicy_only_under_flannel():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    assert admission.warnings("flannel", policy_doc()) == [cnimode.policy_warning("flannel")]
    assert admission.warnings("canal", policy_doc()) == []
    assert admission.warnings("calico", policy_doc()) == []
    assert admission.warnings("flannel", cm) == []


class CountingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.gets: list[str] = []

    def get(self, key):
        self.gets.append(key)
        return super().get(key)


def test_registry_warnings_once_per_write_and_no_config_read_for_other_kinds():
    store = CountingStore()
    registry.bootstrap(store, registry.ClusterConfig(cni="flannel"))
    assert registry.warnings(store, [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}]) == []
    assert store.gets == []
    warned = registry.warnings(store, [policy_doc("a"), policy_doc("b")])
    assert warned == [cnimode.policy_warning("flannel")]


def test_netsim_apply_warns_for_written_policies_only(tmp_path):
    store = MemoryStore()
    registry.bootstrap(store, registry.ClusterConfig(cni="flannel"))
    path = tmp_path / "m.yaml"
    path.write_text(CM + "---\n" + NETPOL)
    docs = verbs.read([path], store)
    results = verbs.apply(store, docs, None)
    assert results == [("configmap/default/c", "created"), ("networkpolicy/default/deny-all", "created")]
    assert verbs.apply_warnings(store, docs, results) == [cnimode.policy_warning("flannel")]
    again = verbs.apply(store, docs, None)
    assert verbs.apply_warnings(store, docs, again) == []  # unchanged: nothing written, nothing warned
    canal = MemoryStore()
    registry.bootstrap(canal, registry.ClusterConfig())
    docs = verbs.read([path], canal)
    assert verbs.apply_warnings(canal, docs, verbs.apply(canal, docs, None)) == []


def test_warning_header_is_quoted_as_kube_apiserver_sends_it():
    assert warning_header('a "b" \\c') == '299 - "a \\"b\\" \\\\c"'


def _set_cni(tmp_path, cni: str) -> None:
    s = SQLiteStore(tmp_path / "store.db")
    try:
        s.put(registry.CONFIG_KEY, {"metadata": {"name": "config"}, **registry.ClusterConfig(cni=cni).to_json()})
    finally:
        s.close()


def test_real_kubectl_prints_the_warning_under_flannel(kubectl, tmp_path):
    _set_cni(tmp_path, "flannel")
    (tmp_path / "np.yaml").write_text(NETPOL)
    code, out, err = kubectl("apply", "-f", str(tmp_path / "np.yaml"))
    assert code == 0 and "networkpolicy.networking.k8s.io/deny-all created" in out, err
    assert f"Warning: {cnimode.policy_warning('flannel')}" in err, err
    (tmp_path / "np.yaml").write_text(NETPOL.replace("Ingress, Egress", "Ingress"))
    code, out, err = kubectl("apply", "-f", str(tmp_path / "np.yaml"))  # an update (PATCH) warns too
    assert code == 0 and "configured" in out and "not enforced" in err, err
    code, out, err = kubectl("apply", "--server-side", "-f", str(tmp_path / "np.yaml"))
    assert code == 0 and "not enforced" in err, err
    code, out, err = kubectl("create", "configmap", "c", "--from-literal=a=b")
    assert code == 0 and "Warning" not in err, err


def test_real_kubectl_prints_no_warning_under_canal(kubectl, tmp_path):
    _set_cni(tmp_path, "canal")
    (tmp_path / "np.yaml").write_text(NETPOL)
    code, out, err = kubectl("apply", "-f", str(tmp_path / "np.yaml"))
    assert code == 0 and "created" in out and "Warning" not in err, err


def test_policy_explain_text_says_the_cni_does_not_enforce_it():
    denied = policy.Verdict(False, ["default/deny-all"], [], None, None, "no egress rule")
    enforced = explain_text("pod/default/a", "pod/default/b", "10.244.1.2", "10.244.2.2", 80, "TCP", denied)
    assert enforced[-1] == "  verdict: denied"
    note = cnimode.not_enforced("flannel")
    lines = explain_text("pod/default/a", "pod/default/b", "10.244.1.2", "10.244.2.2", 80, "TCP", denied, note)
    assert f"  enforced: no: {note}" in lines
    assert lines[-1] == "  verdict: allowed, NetworkPolicy not enforced " \
                        "(the policies would deny it under a CNI that enforces them)"


def test_status_names_the_cni_of_the_scenario():
    of = state.ClusterState.model_construct
    assert _cni(of(scenario={"networking": {"cni": "flannel"}})) == "flannel"
    assert _cni(of(scenario={"networking": {}})) == "canal"
    assert _cni(of(scenario=None)) == "canal"  # a state written before networking.cni existed
