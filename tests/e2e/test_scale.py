"""Scale without falling over (issue 11): 1000 pods on 10 nodes come up and go down cleanly.
bench/scale.py does the work and prints the memory figures; it exits 1 unless every pod ran
with an address of its own and `down` left nothing behind."""

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_a_thousand_pods_on_ten_nodes_come_up_and_go_down_cleanly():
    r = subprocess.run([sys.executable, "bench/scale.py", "--nodes", "10", "--pods", "1000"], cwd=REPO,
                       capture_output=True, text=True, timeout=1800)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1000 Running" in r.stdout and "(1000 distinct IPs" in r.stdout
    assert "left behind: {'namespaces': 0, 'etc-netns': 0, 'agents': 0, 'plugin servers': 0, 'state': 0}" in r.stdout
