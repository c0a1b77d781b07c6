"""The ``loopback`` plugin: brings ``lo`` up in the container (reference: plugins/main/loopback)."""

from __future__ import annotations

import errno
import os

from netsim.cni import spec


def _set_lo(netns: str, up: bool) -> None:
    from netsim import kernel

    with kernel.Namespace.at(netns) as ns, ns.batch() as b:
        b.set_link("lo", up=up)


def cmd_add(req: spec.Request) -> dict:
    _set_lo(req.netns, True)
    return {
        "cniVersion": spec.LATEST,
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": req.netns}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}, {"address": "::1/128", "interface": 0}],
        "dns": {},
    }


def cmd_del(req: spec.Request) -> None:
    if not req.netns or not os.path.exists(req.netns):
        return  # the namespace is gone, and lo with it
    try:
        _set_lo(req.netns, False)
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.EINVAL):
            raise


def cmd_check(req: spec.Request) -> None:
    from netsim import kernel

    with kernel.Namespace.at(req.netns) as ns:
        lo = ns.links().get("lo")
    if not lo or not lo["up"]:
        raise spec.CNIError(spec.INTERNAL, "loopback interface is down")


def cmd_status(req: spec.Request) -> None:
    return None


def cmd_gc(req: spec.Request) -> None:
    return None
