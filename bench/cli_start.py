"""How long `netsim` takes to start, and what it imports to do so.

    .venv/bin/python bench/cli_start.py [--runs 10] [--repo PATH]

Best of N wall times, each in a fresh interpreter, of `netsim --help`, `netsim get pods --help`
and `netsim get pods` up to the point where it needs a cluster (it is given one that does not
exist, with an empty state directory, so it stops at the lookup and touches nothing), beside the
floor: `python -c pass` and `python -c "import typer"`.  For each netsim command, one more run
lists which of the heavy modules it imported (the node agent, the CNI server, the packet tracer,
scapy, pyroute2) and how many modules in all.  --repo runs another checkout's netsim with this
interpreter (e.g. a `git worktree` of an older commit, to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("netsim.node.agent", "netsim.cni.server", "netsim.observe.trace", "scapy", "pyroute2")
NO_CLUSTER = "bench-no-such-cluster"

# Runs netsim as `python -m netsim` would, then reports sys.modules to the file in argv[1].  The
# root check comes before the cluster lookup; faking root lets a user's run reach the lookup too.
CHILD = """
import json, os, runpy, sys
report, sys.argv = sys.argv[1], ["netsim", *sys.argv[2:]]
os.geteuid = lambda: 0
try:
    runpy.run_module("netsim", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    with open(report, "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def best(argv: list[str], runs: int, cwd: Path, env: dict) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return min(times)


def imported(args: list[str], cwd: Path, env: dict) -> list[str]:
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run([sys.executable, "-c", CHILD, report.name, *args], cwd=cwd, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return json.loads(Path(report.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per figure; the best is printed")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose netsim to run (default: this one)")
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as state_dir:
        env = {k: v for k, v in os.environ.items() if k != "NETSIM_CLUSTER"}
        env["NETSIM_STATE_DIR"] = state_dir
        floor = best([py, "-c", "pass"], args.runs, args.repo, env)
        rows = [("python -c pass", floor, None), ('python -c "import typer"',
                                                   best([py, "-c", "import typer"], args.runs, args.repo, env), None)]
        for label, netsim_args in (("netsim --help", ["--help"]), ("netsim get pods --help", ["get", "pods", "--help"]),
                                   ("netsim get pods (no cluster)", ["get", "pods", "-c", NO_CLUSTER])):
            rows.append((label, best([py, "-c", CHILD, os.devnull, *netsim_args], args.runs, args.repo, env),
                         imported(netsim_args, args.repo, env)))
    print(f"{args.repo}: best of {args.runs}, {py}")
    print(f"{'':30} {'wall':>8} {'-floor':>8} {'modules':>8}  heavy modules imported")
    for label, wall, modules in rows:
        if modules is None:
            print(f"{label:30} {wall * 1000:6.0f}ms {'':>8} {'':>8}")
            continue
        heavy = [h for h in HEAVY if h in modules] or ["none"]
        print(f"{label:30} {wall * 1000:6.0f}ms {(wall - floor) * 1000:6.0f}ms {len(modules):8}  {', '.join(heavy)}")


if __name__ == "__main__":
    main()
