"""A real tcpdump in a namespace the test made, for tests that check what the wire carries."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator


@contextlib.contextmanager
def tcpdump(netns: str, ifname: str, *expr: str) -> Iterator[list[str]]:
    """`tcpdump -nn -l -v -i IFNAME EXPR` in ``netns`` while the body runs; yields a list that
    holds its output lines once the body is done."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-nn", "-l", "-v", "-i", ifname, *expr],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # it drops nothing once it says it listens
            line = proc.stderr.readline()
            if not line or "listening on" in line:
                break
        yield lines
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)  # it prints what it holds, then exits
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines += out.splitlines()
