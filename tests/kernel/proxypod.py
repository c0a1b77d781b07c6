"""A stand-in proxy pod for the nginx tests: a fresh namespace with lo up and echo responders on
127.0.0.1 (pod ``s<i>-0`` of Service ``s<i>`` on port 9000+i), removed with everything in it."""

import contextlib

from netsim import kernel
from netsim.model import names
from netsim.node.responder import Identity, Responders
from tests.conftest import unique_name


@contextlib.contextmanager
def responder_namespace(prefix: str, pods: int):
    ns = names.netns_name(unique_name(prefix), "pod")
    responders = None
    try:
        with kernel.Namespace.create(ns) as n, n.batch() as b:
            b.set_link("lo", index=1, up=True)
        responders = Responders()
        for i in range(pods):
            assert responders.ensure(f"default/s{i}-0", ns, Identity(f"s{i}-0", "default", "n1"), [9000 + i]) == []
        yield ns
    finally:
        if responders is not None:
            responders.close()
        kernel.remove_netns([ns])
