"""Every `netsim` command and sub-command group, in the order `netsim --help` lists them: its
name, the module and attribute that define it, and the one-line help the listing shows.

The root group (netsim.cli.app) imports a command's module only when that command runs or its
own help is asked for, so `netsim --help` prints these lines without loading any of them; a unit
test checks each line against the docstring (or group help) it stands for."""

from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    name: str
    module: str
    attr: str  # a function (one command) or a typer.Typer (a group of sub-commands)
    help: str


COMMANDS: tuple[Entry, ...] = (
    Entry("up", "netsim.cli.cluster", "up",
          "Build the cluster a scenario describes (idempotent: converges a cluster that is up)."),
    Entry("join", "netsim.cli.cluster", "join",
          "Run one node of a cluster whose nodes span several machines (agent, NIC, shared etcd)."),
    Entry("down", "netsim.cli.cluster", "down",
          "Remove a cluster: its namespaces, links, rules, processes and state."),
    Entry("status", "netsim.cli.cluster", "status",
          "List the clusters on this host."),
    Entry("exec", "netsim.cli.cluster", "exec_",
          "Run a host command inside a node's, external host's or pod's network namespace."),
    Entry("apply", "netsim.cli.kubectl", "apply",
          "Create or update objects from manifests (multi-document YAML, JSON, directories)."),
    Entry("delete", "netsim.cli.kubectl", "delete",
          "Delete objects by kind and name, or those a manifest declares."),
    Entry("get", "netsim.cli.kubectl", "get",
          "Show objects from the control-plane store, like kubectl get."),
    Entry("describe", "netsim.cli.kubectl", "describe",
          "Show one object in detail, with what netsim knows about it (endpoints, pods, node)."),
    Entry("probe", "netsim.cli.observe_cmd", "probe_cmd",
          "Make one real connection and report who answered and what source address it saw."),
    Entry("check", "netsim.cli.observe_cmd", "check_cmd",
          "Probe the scenario's connectivity expectations (with none: every pod to every pod and Service) "
          "and print expected / observed / comparison tables; exit 1 on any mismatch."),
    Entry("graph", "netsim.cli.observe_cmd", "graph_cmd",
          "Draw the cluster with Graphviz: the underlay (its segments and router), nodes with their tunnels "
          "(flannel.1, vxlan.calico, tunl0) and BGP sessions, external hosts, pods by namespace and Services "
          "with edges to their endpoints."),
    Entry("agent", "netsim.cli.kubectl", "agent_cmd",
          "The node agent (long-running): realises the pods of its nodes; `up` starts it."),
    Entry("apiserver", "netsim.cli.api_cmd", "apiserver_cmd",
          "The Kubernetes API server of a cluster (long-running): serves kubectl; `up` starts it."),
    Entry("kubeconfig", "netsim.cli.api_cmd", "kubeconfig_cmd",
          "Print a standalone kubeconfig for the cluster's API server (kubectl --kubeconfig FILE)."),
    Entry("label", "netsim.cli.kubectl", "label",
          "Set or remove labels, like kubectl label."),
    Entry("annotate", "netsim.cli.kubectl", "annotate",
          "Set or remove annotations, like kubectl annotate (netsim.io/ready=false makes a pod fail its "
          "readiness, as a failing readiness probe would)."),
    Entry("trace", "netsim.cli.trace_cmd", "trace_cmd",
          "Send one packet and show every hop, rewrite, encapsulation and rule it met, and the reply. "
          "Exit code 0 when it was delivered, 1 otherwise."),
    Entry("node", "netsim.cli.cluster", "node_app",
          "Add nodes to a running cluster or take them out (like kind/kubeadm join and delete)."),
    Entry("cni", "netsim.cli.cni", "cni_app",
          "CNI runtime and plugins (like cnitool): add, del, check, status, gc, path, install."),
    Entry("proxy", "netsim.cli.proxy", "proxy_app",
          "What kube-proxy rendered on a node."),
    Entry("policy", "netsim.cli.policy_cmd", "policy_app",
          "NetworkPolicy: why a connection is allowed or denied."),
    Entry("ingress", "netsim.cli.ingress_cmd", "ingress_app",
          "Ingress: which server and location take a request, and where it goes."),
    Entry("bgp", "netsim.cli.bgp_cmd", "bgp_app",
          "BGP in calico mode: each node's BIRD sessions, as calicoctl node status shows them."),
)

BY_NAME: dict[str, Entry] = {e.name: e for e in COMMANDS}
