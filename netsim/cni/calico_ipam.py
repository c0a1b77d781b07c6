"""Calico's IPAM: the ``calico-ipam`` CNI plugin and the block allocator under it, as
libcalico-go's lib/ipam does it, over the crd.projectcalico.org objects upstream keeps in the
kubernetes datastore.

An IPPool is cut into blocks of ``blockSize``.  A node claims a block by writing a
BlockAffinity ``<node>-<block name>`` in state ``pending``, then creating the IPAMBlock
(``10-244-1-0-26``: cidr, ``affinity: host:<node>``, ``allocations`` (one entry per address:
null, or an index into ``attributes``), ``unallocated`` (free ordinals in the order they are
given out), ``attributes`` ([{handle_id, secondary}]), ``sequenceNumber``...) and confirming
the affinity.  An address is taken from the node's affine blocks first; when they are full, a
new block is claimed (the pool's blocks are walked from a start seeded by the node's name, so
nodes spread over the pool and tests must not assume which block); when the pool has no
unclaimed block and IPAMConfig's strictAffinity is false, an address is borrowed from another
node's block.  Each allocation is counted on the IPAMHandle of its owner
(``k8s-pod-network.<containerID>`` for a pod), and released by that handle.  Every write is a
compare-and-swap on ``metadata.resourceVersion``, retried on conflict.

The allocator runs over :class:`BlockStore` (get/list/create/update/delete of those objects);
:class:`KubeBlockStore` is the API-server one the plugin uses, :class:`MemoryBlockStore` an
in-memory one, and the node layer adapts netsim's Store.

The plugin: ADD allocates one IPv4 address per call from the enabled IPv4 IPPools
(``ipam.ipv4_pools`` narrows them; ``default-ipv4-ippool`` is tried first) for the handle
``<network name>.<CNI_CONTAINERID>``, on the node ``nodename`` (or the one named in
``nodename_file``); a second ADD for the same handle returns the address it holds.  DEL
releases the handle (a handle that is not there is no error).  CHECK fails with code 3 when
the handle holds nothing.  Errors: 7 bad netconf or kubeconfig, 11 the pool is exhausted or
the API is unreachable (both clear up), 7 also when the API refuses the kubeconfig's
credentials (401/403), 999 any other refusal.

May import: the standard library and netsim.cni (plugins run on every pod's critical path).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import ipaddress
import random
import threading
import time
from typing import Protocol

from netsim.cni import spec
from netsim.cni.kubeclient import ApiError, KubeClient, KubeconfigError, Unreachable

API_VERSION = "crd.projectcalico.org/v1"
PLURALS = {"IPPool": "ippools", "IPAMBlock": "ipamblocks", "BlockAffinity": "blockaffinities",
           "IPAMHandle": "ipamhandles", "IPAMConfig": "ipamconfigs"}
DEFAULT_POOL = "default-ipv4-ippool"
IPAM_CONFIG = "default"
RETRIES = 100  # upstream's datastoreRetries
DEFAULT_MAX_BLOCKS = 20  # maxBlocksPerHost 0 means this safeguard (upstream autoAssign)
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
CONFIRMED, PENDING, PENDING_DELETION = "confirmed", "pending", "pendingDeletion"


# -- the store ----------------------------------------------------------------------------
class BlockStoreError(Exception):
    pass


class NotFound(BlockStoreError):
    pass


class AlreadyExists(BlockStoreError):
    pass


class Conflict(BlockStoreError):
    """A write at a resourceVersion that is no longer the object's."""


class Unavailable(BlockStoreError):
    """The store cannot be reached."""


class NoAddresses(Exception):
    """No free address for this node in the pool (and none to borrow)."""


class BlockStore(Protocol):
    """IPPool, IPAMBlock, BlockAffinity, IPAMHandle and IPAMConfig objects as dicts
    (apiVersion, kind, metadata {name, resourceVersion}, spec)."""

    def get(self, kind: str, name: str) -> dict | None: ...

    def list(self, kind: str) -> list[dict]: ...

    def create(self, obj: dict) -> dict:
        """The stored object (with its resourceVersion); AlreadyExists when the name is taken."""

    def update(self, obj: dict) -> dict:
        """Replace at ``obj.metadata.resourceVersion``; Conflict when stale, NotFound when gone."""

    def delete(self, kind: str, name: str, resource_version: str | None = None) -> None:
        """Delete (at ``resource_version`` when given: Conflict when stale); NotFound when gone."""


class MemoryBlockStore:
    """A BlockStore in a dict, with the API's resourceVersion semantics."""

    def __init__(self, objects: list[dict] = ()):
        self.objects: dict[tuple[str, str], dict] = {}
        self.revision = 0
        self.lock = threading.Lock()
        for obj in objects:
            self.create(obj)

    def _stamp(self, obj: dict) -> dict:
        self.revision += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.revision)
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)

    def get(self, kind: str, name: str) -> dict | None:
        with self.lock:
            obj = self.objects.get((kind, name))
            return copy.deepcopy(obj) if obj else None

    def list(self, kind: str) -> list[dict]:
        with self.lock:
            return [copy.deepcopy(o) for (k, _), o in sorted(self.objects.items()) if k == kind]

    def create(self, obj: dict) -> dict:
        with self.lock:
            if (obj["kind"], obj["metadata"]["name"]) in self.objects:
                raise AlreadyExists(f"{obj['kind']} {obj['metadata']['name']} already exists")
            return self._stamp(obj)

    def update(self, obj: dict) -> dict:
        with self.lock:
            have = self.objects.get((obj["kind"], obj["metadata"]["name"]))
            if have is None:
                raise NotFound(f"{obj['kind']} {obj['metadata']['name']} not found")
            want = obj["metadata"].get("resourceVersion")
            if want and want != have["metadata"]["resourceVersion"]:
                raise Conflict(f"{obj['kind']} {obj['metadata']['name']} changed")
            return self._stamp(obj)

    def delete(self, kind: str, name: str, resource_version: str | None = None) -> None:
        with self.lock:
            have = self.objects.get((kind, name))
            if have is None:
                raise NotFound(f"{kind} {name} not found")
            if resource_version and resource_version != have["metadata"]["resourceVersion"]:
                raise Conflict(f"{kind} {name} changed")
            del self.objects[(kind, name)]


class KubeBlockStore:
    """The objects in a Kubernetes API (netsim's), at /apis/crd.projectcalico.org/v1/<plural>,
    reached with a kubeconfig as upstream's calico-ipam reaches it."""

    def __init__(self, kubeconfig_path: str, timeout: float = 10.0):
        self.client = KubeClient(kubeconfig_path, timeout)

    def close(self) -> None:
        self.client.close()

    def _path(self, kind: str, name: str = "") -> str:
        return f"/apis/{API_VERSION}/{PLURALS[kind]}" + (f"/{name}" if name else "")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            return self.client.request(method, path, body)
        except Unreachable as exc:
            raise Unavailable(str(exc)) from exc
        except ApiError as exc:
            if exc.status == 404:
                raise NotFound(exc.message) from exc
            if exc.status == 409:
                raise (AlreadyExists if exc.reason == "AlreadyExists" else Conflict)(exc.message) from exc
            raise

    def get(self, kind: str, name: str) -> dict | None:
        try:
            return self._call("GET", self._path(kind, name))
        except NotFound:
            return None

    def list(self, kind: str) -> list[dict]:
        items = self._call("GET", self._path(kind)).get("items") or []
        for item in items:  # a list's items carry no kind
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", API_VERSION)
        return items

    def create(self, obj: dict) -> dict:
        body = copy.deepcopy(obj)
        body["metadata"].pop("resourceVersion", None)
        return self._call("POST", self._path(obj["kind"]), body)

    def update(self, obj: dict) -> dict:
        return self._call("PUT", self._path(obj["kind"], obj["metadata"]["name"]), obj)

    def delete(self, kind: str, name: str, resource_version: str | None = None) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        self._call("DELETE", self._path(kind, name), body)


# -- names and objects --------------------------------------------------------------------
def block_name(cidr) -> str:
    """libcalico-go's names.CIDRToName (netsim.model.calico.block_name says the same)."""
    return str(cidr).replace(".", "-").replace(":", "-").replace("/", "-")


def affinity_name(node: str, cidr) -> str:
    return f"{node}-{block_name(cidr)}"


def handle_name(handle: str) -> str:
    return handle.lower()  # upstream's IPAMHandle object name


def _obj(kind: str, name: str, spec_: dict) -> dict:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec_}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_block(cidr: ipaddress.IPv4Network, node: str) -> dict:
    size = cidr.num_addresses
    return _obj("IPAMBlock", block_name(cidr), {
        "cidr": str(cidr), "affinity": f"host:{node}", "affinityClaimTime": _now(),
        "allocations": [None] * size, "unallocated": list(range(size)), "attributes": [],
        # Seeded from the clock, as upstream: a block deleted and made again gives its
        # addresses new sequence numbers.
        "sequenceNumber": time.time_ns(), "sequenceNumberForAllocation": {}, "deleted": False,
        "strictAffinity": False})


def _ipam_config(store: BlockStore) -> dict:
    cfg = (store.get("IPAMConfig", IPAM_CONFIG) or {}).get("spec") or {}
    return {"strictAffinity": bool(cfg.get("strictAffinity", False)),
            "autoAllocateBlocks": cfg.get("autoAllocateBlocks", True) is not False,
            "maxBlocksPerHost": int(cfg.get("maxBlocksPerHost") or 0) or DEFAULT_MAX_BLOCKS}


def fnv32(text: str) -> int:
    """FNV-1 32-bit (Go's hash/fnv New32, upstream's seed for a node's block walk)."""
    h = 0x811C9DC5
    for byte in text.encode():
        h = (h * 0x01000193) & 0xFFFFFFFF
        h ^= byte
    return h


def pool_blocks(pool: ipaddress.IPv4Network, block_size: int, node: str) -> list[ipaddress.IPv4Network]:
    """Every block of the pool, in the order ``node`` tries them: from a start seeded by its
    name, wrapping round (upstream's randomBlockGenerator)."""
    blocks = list(pool.subnets(new_prefix=block_size))
    start = random.Random(fnv32(node)).randrange(len(blocks))
    return blocks[start:] + blocks[:start]


def _cidr(block: dict) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(block["spec"]["cidr"])


def _free(block: dict) -> int:
    return len(block["spec"].get("unallocated") or [])


def _empty(block: dict) -> bool:
    return all(a is None for a in block["spec"].get("allocations") or [])


def _host(block: dict) -> str | None:
    affinity = block["spec"].get("affinity") or ""
    return affinity.split(":", 1)[1] if affinity.startswith("host:") else None


# -- allocation ---------------------------------------------------------------------------
def _held(store: BlockStore, handle: str) -> ipaddress.IPv4Address | None:
    """The address ``handle`` holds already, if any (a repeated ADD gets it back)."""
    obj = store.get("IPAMHandle", handle_name(handle))
    for cidr in ((obj or {}).get("spec") or {}).get("block") or {}:
        block = store.get("IPAMBlock", block_name(cidr))
        if block is None:
            continue
        attrs = block["spec"].get("attributes") or []
        for ordinal, index in enumerate(block["spec"]["allocations"]):
            if index is not None and index < len(attrs) and attrs[index].get("handle_id") == handle:
                return _cidr(block)[ordinal]
    return None


def _assign(store: BlockStore, block: dict, handle: str, attrs: dict) -> ipaddress.IPv4Address | None:
    """One address from ``block`` (CAS, re-reading on conflict); None when it has none free."""
    for _ in range(RETRIES):
        s = block["spec"]
        if not s.get("unallocated"):
            return None
        ordinal = s["unallocated"].pop(0)
        attribute = {"handle_id": handle, "secondary": dict(attrs)}
        if attribute in s["attributes"]:
            index = s["attributes"].index(attribute)
        else:
            index = len(s["attributes"])
            s["attributes"].append(attribute)
        s["allocations"][ordinal] = index
        s.setdefault("sequenceNumberForAllocation", {})[str(ordinal)] = s.get("sequenceNumber", 0)
        s["sequenceNumber"] = s.get("sequenceNumber", 0) + 1
        try:
            store.update(block)
        except (Conflict, NotFound):
            block = store.get("IPAMBlock", block["metadata"]["name"])
            if block is None:
                return None
            continue
        _increment_handle(store, handle, str(_cidr(block)))
        return _cidr(block)[ordinal]
    raise Unavailable("max retries hit - excessive concurrent IPAM requests")


def _increment_handle(store: BlockStore, handle: str, cidr: str) -> None:
    for _ in range(RETRIES):
        obj = store.get("IPAMHandle", handle_name(handle))
        try:
            if obj is None:
                store.create(_obj("IPAMHandle", handle_name(handle),
                                  {"handleID": handle, "block": {cidr: 1}, "deleted": False}))
            else:
                blocks = obj["spec"].setdefault("block", {})
                blocks[cidr] = blocks.get(cidr, 0) + 1
                store.update(obj)
            return
        except (Conflict, AlreadyExists, NotFound):
            continue
    raise Unavailable(f"max retries hit updating handle {handle}")


def _block_for_affinity(store: BlockStore, aff: dict, node: str) -> dict | None:
    """The block an affinity names, created when missing and the affinity then confirmed
    (upstream's getBlockFromAffinity + claimAffineBlock); None when another node has it."""
    cidr = ipaddress.IPv4Network(aff["spec"]["cidr"])
    block = store.get("IPAMBlock", block_name(cidr))
    if block is None:
        if aff["spec"].get("state") != PENDING:
            aff["spec"]["state"] = PENDING
            aff = store.update(aff)
        try:
            block = store.create(new_block(cidr, node))
        except AlreadyExists:
            block = store.get("IPAMBlock", block_name(cidr))
            if block is None or _host(block) != node:
                # Another node beat us to the block: our pending claim goes.
                with contextlib.suppress(NotFound, Conflict):
                    store.delete("BlockAffinity", aff["metadata"]["name"], aff["metadata"]["resourceVersion"])
                return None
        aff["spec"]["state"] = CONFIRMED
        store.update(aff)
        return block
    if _host(block) != node:
        # A stale affinity (the block went to another node): remove it.
        with contextlib.suppress(NotFound, Conflict):
            store.delete("BlockAffinity", aff["metadata"]["name"], aff["metadata"]["resourceVersion"])
        return None
    if aff["spec"].get("state") not in (CONFIRMED, ""):
        aff["spec"]["state"] = CONFIRMED
        store.update(aff)
    return block


def _affine(store: BlockStore, node: str, pool: ipaddress.IPv4Network) -> list[dict]:
    """The node's affinities in the pool, whatever their state: a pending or pendingDeletion
    one is confirmed again when its block is used (upstream's getBlockFromAffinity)."""
    return sorted((a for a in store.list("BlockAffinity")
                   if a["spec"].get("node") == node and str(a["spec"].get("deleted", "false")).lower() != "true"
                   and ipaddress.IPv4Network(a["spec"]["cidr"]).subnet_of(pool)),
                  key=lambda a: ipaddress.IPv4Network(a["spec"]["cidr"]))


def _claim(store: BlockStore, node: str, cidr: ipaddress.IPv4Network) -> dict | None:
    """Claim ``cidr`` for ``node``: a pending affinity, the block, the affinity confirmed."""
    name = affinity_name(node, cidr)
    try:
        aff = store.create(_obj("BlockAffinity", name, {"state": PENDING, "node": node, "type": "host",
                                                        "cidr": str(cidr), "deleted": "false"}))
    except AlreadyExists:
        aff = store.get("BlockAffinity", name)
        if aff is None:
            return None
    return _block_for_affinity(store, aff, node)


def allocate(store: BlockStore, node: str, handle: str, pool_cidr: str, block_size: int,
             attrs: dict) -> ipaddress.IPv4Address:
    """One address of the pool for ``handle`` on ``node`` (the one the handle holds, if any):
    from the node's blocks, else a newly claimed block, else (strictAffinity off) borrowed
    from another node's block; NoAddresses when there is none."""
    pool = ipaddress.IPv4Network(pool_cidr)
    if not pool.prefixlen <= block_size <= 32:
        raise ValueError(f"blockSize {block_size} does not fit the pool {pool_cidr}")
    held = _held(store, handle)
    if held is not None and held in pool:
        return held
    cfg = _ipam_config(store)
    affinities = _affine(store, node, pool)
    for aff in affinities:
        for _ in range(RETRIES):
            try:
                block = _block_for_affinity(store, aff, node)
                break
            except (Conflict, NotFound):
                aff = store.get("BlockAffinity", aff["metadata"]["name"])
                if aff is None:
                    block = None
                    break
        else:
            continue
        if block is not None and _free(block):
            address = _assign(store, block, handle, attrs)
            if address is not None:
                return address
    if cfg["autoAllocateBlocks"] and len(affinities) < cfg["maxBlocksPerHost"]:
        for _ in range(RETRIES):
            taken = {o["spec"]["cidr"]: o for o in store.list("IPAMBlock")}
            candidate = next((b for b in pool_blocks(pool, block_size, node)
                              if str(b) not in taken or (_host(taken[str(b)]) == node and _free(taken[str(b)]))),
                             None)
            if candidate is None:
                break
            try:
                block = _claim(store, node, candidate)
            except (Conflict, NotFound):
                continue  # someone else moved first: look again
            if block is None:
                continue
            address = _assign(store, block, handle, attrs)
            if address is not None:
                return address
    if not cfg["strictAffinity"]:
        for cidr in pool_blocks(pool, block_size, node):
            block = store.get("IPAMBlock", block_name(cidr))
            if block is not None and _free(block):
                address = _assign(store, block, handle, attrs)
                if address is not None:
                    return address
    limit = "" if len(affinities) < cfg["maxBlocksPerHost"] else \
        f"; {node} has {len(affinities)} blocks, the limit (IPAMConfig maxBlocksPerHost)"
    raise NoAddresses(f"no free address in pool {pool_cidr} for {node}{limit}")


# -- release ------------------------------------------------------------------------------
def _release_in_block(store: BlockStore, cidr: str, handle: str) -> list[ipaddress.IPv4Address]:
    for _ in range(RETRIES):
        block = store.get("IPAMBlock", block_name(cidr))
        if block is None:
            return []
        s = block["spec"]
        attrs = s.get("attributes") or []
        mine = {i for i, a in enumerate(attrs) if a.get("handle_id") == handle}
        ordinals = [o for o, i in enumerate(s["allocations"]) if i is not None and i in mine]
        if not ordinals:
            return []
        for o in ordinals:
            s["allocations"][o] = None
            s.get("sequenceNumberForAllocation", {}).pop(str(o), None)
        # Freed ordinals go to the back: an address is not handed out again at once.
        s["unallocated"] = [o for o in s["unallocated"] if o not in ordinals] + ordinals
        used = sorted({i for i in s["allocations"] if i is not None})
        remap = {old: new for new, old in enumerate(used)}
        s["attributes"] = [attrs[i] for i in used]
        s["allocations"] = [None if i is None else remap[i] for i in s["allocations"]]
        s["sequenceNumber"] = s.get("sequenceNumber", 0) + 1
        try:
            if _empty(block) and not s.get("affinity"):
                store.delete("IPAMBlock", block["metadata"]["name"], block["metadata"]["resourceVersion"])
            else:
                store.update(block)
        except Conflict:
            continue
        except NotFound:
            return []
        return [_cidr(block)[o] for o in ordinals]
    raise Unavailable(f"max retries hit releasing {handle} in {cidr}")


def release_handle(store: BlockStore, handle: str) -> list[ipaddress.IPv4Address]:
    """Free every address ``handle`` holds and drop the handle; the addresses freed (none
    when the handle is not there: releasing twice is no error)."""
    obj = store.get("IPAMHandle", handle_name(handle))
    if obj is None:
        return []
    freed = []
    for cidr in list(obj["spec"].get("block") or {}):
        freed += _release_in_block(store, cidr, handle)
    for _ in range(RETRIES):
        try:
            store.delete("IPAMHandle", obj["metadata"]["name"], obj["metadata"]["resourceVersion"])
            break
        except NotFound:
            break
        except Conflict:
            obj = store.get("IPAMHandle", handle_name(handle))
            if obj is None:
                break
    return freed


def release_node(store: BlockStore, node: str) -> list[str]:
    """Drop ``node``'s affinities and the blocks they name that hold no allocation (a block
    still in use keeps its affinity); the CIDRs released."""
    released = []
    for aff in store.list("BlockAffinity"):
        if aff["spec"].get("node") != node:
            continue
        cidr = aff["spec"]["cidr"]
        for _ in range(RETRIES):
            block = store.get("IPAMBlock", block_name(cidr))
            if block is not None and not _empty(block):
                if aff["spec"].get("state") == PENDING_DELETION:  # a pod took an address meanwhile
                    aff["spec"]["state"] = CONFIRMED
                    with contextlib.suppress(Conflict, NotFound):
                        store.update(aff)
                break
            try:
                aff["spec"]["state"] = PENDING_DELETION
                aff = store.update(aff)
                if block is not None and _host(block) == node:
                    store.delete("IPAMBlock", block["metadata"]["name"], block["metadata"]["resourceVersion"])
                store.delete("BlockAffinity", aff["metadata"]["name"], aff["metadata"]["resourceVersion"])
                released.append(cidr)
                break
            except Conflict:
                aff = store.get("BlockAffinity", aff["metadata"]["name"])
                if aff is None:
                    break
            except NotFound:
                break
    return released


# -- the plugin ---------------------------------------------------------------------------
def _invalid(msg: str, details: str = "") -> spec.CNIError:
    return spec.CNIError(spec.INVALID_CONFIG, msg, details)


def nodename(config: dict) -> str:
    """The node this call is for: ``nodename``, else the file ``nodename_file`` names (as
    calico/node writes /var/lib/calico/nodename)."""
    name = config.get("nodename")
    if name is not None and (not isinstance(name, str) or not name):
        raise _invalid("calico-ipam: nodename must be a non-empty string")
    if name:
        return name
    path = config.get("nodename_file") or DEFAULT_NODENAME_FILE
    try:
        with open(path) as f:
            name = f.read().strip()
    except OSError:
        name = ""
    if not name:
        raise _invalid("calico-ipam: no node name", f'set "nodename" in the network configuration (or write it '
                       f"to {path}, as calico/node does)")
    return name


def kubeconfig_path(config: dict) -> str:
    if config.get("datastore_type", "kubernetes") != "kubernetes":
        raise spec.CNIError(spec.UNSUPPORTED_FIELD, f"calico: datastore_type {config['datastore_type']!r} "
                            "is not supported", 'netsim keeps Calico\'s objects in the Kubernetes API: "kubernetes"')
    kube = config.get("kubernetes")
    if not isinstance(kube, dict) or not isinstance(kube.get("kubeconfig"), str) or not kube["kubeconfig"]:
        raise _invalid("calico: kubernetes.kubeconfig is required",
                       '"kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}')
    return kube["kubeconfig"]


def open_store(config: dict) -> KubeBlockStore:
    path = kubeconfig_path(config)
    try:
        return KubeBlockStore(path)
    except KubeconfigError as exc:
        raise _invalid(f"calico: cannot use kubernetes.kubeconfig: {exc}") from exc
    except OSError as exc:  # a certificate or key OpenSSL refused
        raise _invalid(f"calico: kubeconfig {path}: {exc}") from exc


@contextlib.contextmanager
def _errors():
    """Store failures as the spec's errors."""
    try:
        yield
    except Unavailable as exc:
        raise spec.CNIError(spec.TRY_AGAIN_LATER, "calico-ipam: the Kubernetes API is not reachable",
                            str(exc)) from exc
    except NoAddresses as exc:
        raise spec.CNIError(spec.TRY_AGAIN_LATER, f"calico-ipam: {exc}",
                            "addresses come back when pods are deleted; or add an IPPool") from exc
    except ApiError as exc:
        code = spec.INVALID_CONFIG if exc.status in (401, 403) else spec.INTERNAL
        raise spec.CNIError(code, f"calico-ipam: the Kubernetes API refused: {exc.status} {exc.reason}",
                            exc.message) from exc


def _pools(store: BlockStore, ipam: dict) -> list[dict]:
    wanted = ipam.get("ipv4_pools")
    if wanted is not None and (not isinstance(wanted, list) or not all(isinstance(p, str) for p in wanted)):
        raise _invalid("calico-ipam: ipam.ipv4_pools must be a list of IPPool names or CIDRs")
    pools = []
    for pool in store.list("IPPool"):
        s = pool.get("spec") or {}
        try:
            net = ipaddress.ip_network(s.get("cidr", ""))
        except ValueError:
            continue
        if net.version != 4 or s.get("disabled"):
            continue
        if wanted and pool["metadata"]["name"] not in wanted and str(net) not in wanted:
            continue
        pools.append(pool)
    pools.sort(key=lambda p: (p["metadata"]["name"] != DEFAULT_POOL, p["metadata"]["name"]))
    if not pools:
        raise spec.CNIError(spec.TRY_AGAIN_LATER, "calico-ipam: no enabled IPv4 IPPool" +
                            (f" among {wanted}" if wanted else ""), "create one (default-ipv4-ippool)")
    return pools


def handle_id(req: spec.Request) -> str:
    return f"{req.name}.{req.container_id}"


def _check_ipam(req: spec.Request) -> dict:
    ipam = req.config.get("ipam") or {}
    if ipam.get("assign_ipv6") in (True, "true"):
        raise spec.CNIError(spec.UNSUPPORTED_FIELD, "calico-ipam: assign_ipv6 is not supported",
                            "netsim's Calico pools are IPv4")
    return ipam


def cmd_add(req: spec.Request) -> dict:
    ipam = _check_ipam(req)
    node = nodename(req.config)
    store = open_store(req.config)
    attrs = {"node": node, "timestamp": str(datetime.datetime.now(datetime.UTC))}
    if req.args.get("K8S_POD_NAME"):
        attrs.update(namespace=req.args.get("K8S_POD_NAMESPACE", ""), pod=req.args["K8S_POD_NAME"])
    try:
        with _errors():
            failure: NoAddresses | None = None
            for pool in _pools(store, ipam):
                s = pool["spec"]
                try:
                    address = allocate(store, node, handle_id(req), s["cidr"], int(s.get("blockSize", 26)), attrs)
                except NoAddresses as exc:
                    failure = exc
                    continue
                except ValueError as exc:
                    raise _invalid(f"calico-ipam: IPPool {pool['metadata']['name']}: {exc}") from exc
                cidr = f"{address}/{int(s.get('blockSize', 26))}"
                return {"cniVersion": spec.LATEST, "ips": [{"address": cidr}], "routes": [{"dst": cidr}], "dns": {}}
            raise failure
    finally:
        store.close()


def cmd_del(req: spec.Request) -> None:
    store = open_store(req.config)
    try:
        with _errors():
            release_handle(store, handle_id(req))
    finally:
        store.close()


def cmd_check(req: spec.Request) -> None:
    store = open_store(req.config)
    try:
        with _errors():
            held = _held(store, handle_id(req))
    finally:
        store.close()
    if held is None:
        raise spec.CNIError(spec.UNKNOWN_CONTAINER, f"calico-ipam: handle {handle_id(req)} holds no address")


def cmd_status(req: spec.Request) -> None:
    _check_ipam(req)
    nodename(req.config)
    store = open_store(req.config)
    try:
        with _errors():
            _pools(store, req.config.get("ipam") or {})
    except spec.CNIError as err:
        raise spec.CNIError(spec.NOT_AVAILABLE, err.msg, err.details) from err
    finally:
        store.close()


def cmd_gc(req: spec.Request) -> None:
    """Nothing: upstream's plugin has no GC either (kube-controllers' IPAM GC frees the
    addresses of pods that are gone)."""
    open_store(req.config).close()
