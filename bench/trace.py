"""`netsim trace` end to end: what a user waits for, from typing the command to the verdict.

    .venv/bin/python bench/trace.py [--runs 10]

Brings up scenarios/basic.yaml plus a pod pinned to worker2 behind a Service, a Service with
no endpoints and a pod isolated by a default-deny NetworkPolicy, then times `netsim trace`
(the whole command: interpreter start, store, arming captures in every namespace, the packet,
the hop list) for four cases:

  clusterip-vxlan   pod on worker1 -> ClusterIP whose only endpoint is on worker2 (DELIVERED)
  nodeport-masq     external host -> NodePort on the control plane (DELIVERED, masqueraded)
  no-endpoints      pod -> Service with no endpoints (REJECTED)
  policy-drop       pod -> isolated pod (DROPPED: waits for the packet to stop moving)

and prints, per case, the wall time p50/max and the time trace.run reports for itself.
The target (issue 8) is <= 2 s end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MANIFESTS = """apiVersion: v1
kind: Pod
metadata: {name: far, labels: {app: far}}
spec:
  nodeName: worker2
  containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: far}
spec:
  selector: {app: far}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: far-np}
spec:
  type: NodePort
  selector: {app: far}
  ports: [{port: 80, targetPort: 8080, nodePort: 30090}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: isolated, labels: {app: isolated}}
spec:
  nodeName: worker2
  containers: [{name: c, image: agnhost, ports: [{containerPort: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate}
spec:
  podSelector: {matchLabels: {app: isolated}}
  policyTypes: [Ingress]
"""

CASES = {
    "clusterip-vxlan": (["pod/default/client", "svc/default/far"], "DELIVERED"),
    "nodeport-masq": (["host/client", "node/control-plane", "--port", "30090"], "DELIVERED"),
    "no-endpoints": (["pod/default/client", "svc/default/empty"], "REJECTED"),
    "policy-drop": (["pod/default/client", "pod/default/isolated", "--port", "80"], "DROPPED"),
}


def netsim(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netsim", *args], capture_output=True, text=True, check=check,
                          cwd=ROOT, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    name = f"bench-trace-{os.getpid() % 10000}"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NETSIM_STATE_DIR"] = str(Path(tmp) / "state")
        manifests = Path(tmp) / "m.yaml"
        manifests.write_text(MANIFESTS)
        try:
            netsim("up", str(ROOT / "scenarios" / "basic.yaml"), "--name", name)
            netsim("apply", "-f", str(manifests), "-c", name)
            print(f"netsim trace, {args.runs} runs per case (cluster {name}: 3 nodes, 1 host, "
                  f"{len(json.loads(netsim('get', 'pods', '-A', '-o', 'json', '-c', name).stdout)['items'])} pods)")
            print(f"{'case':<17} {'verdict':<10} {'wall p50':>9} {'wall max':>9} {'run() p50':>10} {'captures':>9}")
            for case, (argv, want) in CASES.items():
                walls, inner, caps = [], [], []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    out = netsim("trace", *argv, "-o", "json", "-c", name, check=False)
                    walls.append(time.perf_counter() - t)
                    result = json.loads(out.stdout)
                    assert result["verdict"]["result"] == want, (case, result["verdict"])
                    inner.append(result["elapsedMs"] / 1000)
                    caps.append(sum(h["kind"] == "capture" for h in result["hops"] + result["reply"]))
                print(f"{case:<17} {want:<10} {statistics.median(walls):>8.2f}s {max(walls):>8.2f}s "
                      f"{statistics.median(inner):>9.2f}s {statistics.median(caps):>9.0f}")
        finally:
            netsim("down", name, check=False)


if __name__ == "__main__":
    main()
