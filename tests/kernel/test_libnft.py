"""libnftables' two limits, met the way the agent meets them (netsim.kernel.libnft.LibNft): contexts
in several threads at once, and a process holding more than 1024 descriptors.  Each case runs
in a child process, since what goes wrong is the process dying (SIGABRT)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from netsim import kernel
from netsim.model import names
from tests.conftest import REPO, unique_name

HIGH_FDS = """
    import os, resource
    from netsim.kernel.libnft import LibNft
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    LibNft.RESERVE = {reserve}
    LibNft(path).close()  # the agent's first context (kube-proxy, policy) comes before its pods
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    assert held[-1] >= 1024, held[-1]
    for i in range(20):
        lib = LibNft(path)
        lib.run(f"add table inet t{{i}}\\ndelete table inet t{{i}}\\n")
        lib.close()
    print("ok")
"""

RAW_HIGH_FD = """
    import os, resource
    from netsim import kernel
    from netsim.kernel.libnft import LibNft
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    lib = LibNft.load()
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    with kernel.entered(path):
        ctx = lib.nft_ctx_new(0)
    lib.nft_run_cmd_from_buffer(ctx, b"add table inet t\\n")
    print("survived")
"""

THREADS = """
    import threading
    from netsim.kernel.libnft import LibNft
    failures = []
    def work(k):
        try:
            for i in range(40):
                lib = LibNft(path)
                lib.run(f"add table inet w{k}\\nadd set inet w{k} s {{ type mark; }}\\n"
                        f"add element inet w{k} s {{ {i} }}\\nlist set inet w{k} s\\n")
                lib.close()
        except Exception as exc:
            failures.append(repr(exc))
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not failures, failures
    print("ok")
"""


def _run(body: str) -> subprocess.CompletedProcess:
    netns = names.netns_name(unique_name("nft"), "n")
    kernel.Namespace.create(netns).close()
    try:
        code = f"path = {kernel.netns_path(netns)!r}\n" + textwrap.dedent(body)
        return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        kernel.remove_netns([netns])


def test_contexts_in_a_process_holding_more_than_1024_descriptors():
    done = _run(HIGH_FDS.format(reserve=8))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    # Without the reserve, a clear error instead of a dead process...
    bare = _run(HIGH_FDS.format(reserve=0))
    assert bare.returncode == 1 and "no descriptor below 1024 is free" in bare.stderr, bare.stderr[-2000:]
    # ...which is what libnftables itself does to a process whose context has a high socket.
    raw = _run(RAW_HIGH_FD)
    assert raw.returncode == -signal.SIGABRT and "FD_SETSIZE" in raw.stderr, (raw.returncode, raw.stderr[-2000:])


def test_contexts_in_eight_threads_at_once():
    done = _run(THREADS)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
