"""CNI ADD and DEL latency: netsim's plugins against the reference plugins, side by side.

    .venv/bin/python bench/cni_latency.py [--rounds 60]

Each round creates a container namespace and calls bridge + host-local ADD, then DEL, the
way a runtime does: the plugin executable is exec'd from a thread standing in the runtime's
namespace (a node), config on stdin.  Three contestants, interleaved round by round so that
machine noise hits them alike:

  reference   /usr/lib/cni/bridge -> /usr/lib/cni/host-local (Go, containernetworking-plugins)
  netsim      cni_plugins/bin/bridge, the compiled launcher (netsim/cni/shim.c), handing the
              call to a plugin server over NETSIM_CNI_SOCKET (the node agent's path; the
              server runs bridge and host-local in-process, in the caller's namespace)
  netsim-py   cni_plugins/bridge, the Python launcher, same server (Python's ~8 ms start)
  netsim-alone cni_plugins/bin/bridge with no cluster (no NETSIM_CNI_SOCKET): the standalone
              server (netsim/cni/standalone.py) the first call starts; stopped at the end
  netsim-script the no-compiler fallback `netsim cni path` writes (a Python script for this
              interpreter), no cluster: the same standalone server, started by Python
  netsim-cold cni_plugins/bridge with no server: Python imports and runs everything per call

Prints p50/p95 in ms and the ratio to the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netsim import kernel  # noqa: E402
from netsim.cni import runtime, standalone  # noqa: E402

REFERENCE = Path("/usr/lib/cni")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def call(exe: str, command: str, conf: dict, env: dict, runtime_ns: str) -> float:
    data = json.dumps(conf).encode()
    with kernel.entered(kernel.netns_path(runtime_ns)):
        t0 = time.perf_counter()
        proc = subprocess.run([exe], input=data, env={**env, "CNI_COMMAND": command}, capture_output=True)
        elapsed = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{exe} {command} failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench creates network namespaces")
    if not (REFERENCE / "bridge").exists():
        raise SystemExit("the reference plugins are missing: apt-get install containernetworking-plugins")
    tmp = Path(tempfile.mkdtemp(prefix="netsim-cni-bench-"))
    prefix = f"nsim.cnibench{os.getpid()}"
    built = Path(runtime.built_dir())
    runtime.install(str(built))  # the compiled launchers, as `make install` builds them
    sock = {"NETSIM_CNI_SOCKET": str(tmp / "cni.sock")}
    py = ROOT / "cni_plugins"
    script = tmp / "script-bin"
    compile_shim, runtime._compile_shim = runtime._compile_shim, lambda _output: False  # as with no cc
    try:
        runtime.install(str(script))
    finally:
        runtime._compile_shim = compile_shim
    contestants = {
        "reference": (str(REFERENCE / "bridge"), str(REFERENCE), {}),
        "netsim": (str(built / "bridge"), str(built), sock),
        "netsim-py": (str(py / "bridge"), str(py), sock),
        "netsim-alone": (str(built / "bridge"), str(built), {}),
        "netsim-script": (str(script / "bridge"), str(script), {}),
        "netsim-cold": (str(py / "bridge"), str(py), {}),
    }
    key = runtime.install_key()
    standalone.stop_all(key=key)  # measure a server this run starts
    server = subprocess.Popen([sys.executable, "-m", "netsim.cni.server", str(tmp / "cni.sock")], cwd=ROOT)
    made: list[str] = []
    try:
        for _ in range(100):
            if (tmp / "cni.sock").exists():
                break
            time.sleep(0.05)
        times: dict[str, dict[str, list[float]]] = {n: {"ADD": [], "DEL": []} for n in contestants}
        for n in range(len(contestants)):
            node_ns = f"{prefix}.node{n}"
            kernel.Namespace.create(node_ns).close()
            made.append(node_ns)
        for r in range(args.rounds + 3):  # the first rounds warm caches and are not counted
            for n, (name, (exe, cni_path, extra)) in enumerate(contestants.items()):
                node_ns = f"{prefix}.node{n}"
                ctr = f"{prefix}.c{n}x{r}"
                kernel.Namespace.create(ctr).close()
                made.append(ctr)
                conf = {"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0",
                        "isDefaultGateway": True,
                        "ipam": {"type": "host-local", "subnet": "10.77.0.0/16", "dataDir": str(tmp / name)}}
                env = {"PATH": os.environ["PATH"], "CNI_PATH": cni_path, "CNI_CONTAINERID": f"bench{r}",
                       "CNI_NETNS": kernel.netns_path(ctr), "CNI_IFNAME": "eth0", **extra}
                add = call(exe, "ADD", conf, env, node_ns)
                dele = call(exe, "DEL", conf, env, node_ns)
                if r >= 3:
                    times[name]["ADD"].append(add)
                    times[name]["DEL"].append(dele)
                kernel.remove_netns([ctr])
                made.remove(ctr)
        ref = times["reference"]
        print(f"bridge + host-local, {args.rounds} rounds, ms (ratio to reference p50)")
        print(f"{'plugins':<13} {'ADD p50':>8} {'ADD p95':>8} {'DEL p50':>8} {'DEL p95':>8} {'ADD x':>6} {'DEL x':>6}")
        for name, t in times.items():
            a50, a95, d50, d95 = pct(t["ADD"], .5), pct(t["ADD"], .95), pct(t["DEL"], .5), pct(t["DEL"], .95)
            print(f"{name:<13} {a50:8.1f} {a95:8.1f} {d50:8.1f} {d95:8.1f} "
                  f"{a50 / pct(ref['ADD'], .5):6.2f} {d50 / pct(ref['DEL'], .5):6.2f}")
        print("(mean ADD: " + ", ".join(f"{n} {statistics.mean(t['ADD']):.1f}" for n, t in times.items()) + ")")
    finally:
        standalone.stop_all(key=key)
        server.terminate()
        server.wait(timeout=10)
        kernel.remove_netns(made)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
