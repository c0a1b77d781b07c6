"""meta.k8s.io/v1 Tables (`Accept: application/json;as=Table`) as kube-apiserver's printers make
them (pkg/printers/internalversion): the server always fills the wide columns and marks them
priority 1, and kubectl shows those with -o wide.  Kinds without a printer get the default
convertor's NAME and CREATED AT; custom resources NAME, their additionalPrinterColumns (simple
JSONPath) or AGE.  Pure.  May use: the standard library only."""

from __future__ import annotations

from datetime import datetime


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d" if h % 24 == 0 else f"{h // 24}d{h % 24}h"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        dy = (h // 24) % 365
        return f"{h // 24 // 365}y" if dy == 0 else f"{h // 24 // 365}y{dy}d"
    return f"{h // 24 // 365}y"


def since(ts: str | None, now: float) -> str:
    """translateTimestampSince: <unknown> for no timestamp."""
    if not ts:
        return "<unknown>"
    try:
        return human_duration(now - datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return "<invalid>"


def _col(name: str, kind: str = "string", priority: int = 0, fmt: str = "", desc: str = "") -> dict:
    return {"name": name, "type": kind, "format": fmt, "description": desc, "priority": priority}


NAME = _col("Name", fmt="name", desc="Name must be unique within a namespace.")
AGE = _col("Age", desc="CreationTimestamp is a timestamp representing the server time when this object was created.")


def _labels(m: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((m or {}).items())) or "<none>"


def _pod(o: dict, now: float) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    n = len(spec.get("containers") or [])
    reason = st.get("reason") or st.get("phase") or "Pending"
    statuses = st.get("containerStatuses")
    if statuses is None:
        # netsim's agent writes conditions, not containerStatuses: Ready means every container is.
        ready = n if any(c.get("type") == "Ready" and c.get("status") == "True"
                         for c in st.get("conditions") or []) else 0
        reason = {"Succeeded": "Completed", "Failed": "Error"}.get(reason, reason)
        restarts = 0
    else:
        ready = sum(1 for c in statuses if c.get("ready") and "running" in (c.get("state") or {}))
        restarts = sum(c.get("restartCount", 0) for c in statuses)
    if o["metadata"].get("deletionTimestamp") and st.get("phase") not in ("Succeeded", "Failed"):
        reason = "Terminating"
    ips = st.get("podIPs") or ([{"ip": st["podIP"]}] if st.get("podIP") else [])
    return [o["metadata"]["name"], f"{ready}/{n}", reason, str(restarts),
            since(o["metadata"].get("creationTimestamp"), now),
            (ips[0]["ip"] if ips else "") or "<none>", spec.get("nodeName") or "<none>",
            st.get("nominatedNodeName") or "<none>", "<none>"]


def _service(o: dict, now: float) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    t = spec.get("type", "ClusterIP")
    ext = ",".join(spec.get("externalIPs") or [])
    if t == "LoadBalancer":
        ingress = (st.get("loadBalancer") or {}).get("ingress") or []
        lb = sorted({i.get("ip") or i.get("hostname") for i in ingress} - {None})
        ext = ",".join(lb + (spec.get("externalIPs") or [])) or "<pending>"
    elif t == "ExternalName":
        ext = spec.get("externalName", "")
    ports = ",".join(f"{p['port']}:{p['nodePort']}/{p.get('protocol', 'TCP')}" if p.get("nodePort")
                     else f"{p['port']}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [o["metadata"]["name"], t, ips[0] if ips else "<none>", ext or "<none>", ports or "<none>",
            since(o["metadata"].get("creationTimestamp"), now), _labels(spec.get("selector"))]


POD_COLS = [NAME, _col("Ready"), _col("Status"), _col("Restarts"), AGE, _col("IP", priority=1),
            _col("Node", priority=1), _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)]
SERVICE_COLS = [NAME, _col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), AGE,
                _col("Selector", priority=1)]
PRINTERS = {"Pod": (POD_COLS, _pod), "Service": (SERVICE_COLS, _service)}

def _selector(sel: dict | None) -> str:
    """metav1.LabelSelector as a string, requirements sorted by key ("" for none)."""
    reqs = [(k, f"{k}={v}") for k, v in ((sel or {}).get("matchLabels") or {}).items()]
    for e in (sel or {}).get("matchExpressions") or []:
        k, op, vals = e.get("key", ""), e.get("operator"), ",".join(sorted(e.get("values") or []))
        reqs.append((k, {"In": f"{k} in ({vals})", "NotIn": f"{k} notin ({vals})", "Exists": k,
                         "DoesNotExist": f"!{k}"}.get(op, k)))
    return ",".join(r for _, r in sorted(reqs, key=lambda x: x[0]))


def _containers(o: dict) -> list:
    cs = (((o.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    return [",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)]


def _age(o: dict, now: float) -> str:
    return since(o["metadata"].get("creationTimestamp"), now)


def _deployment(o: dict, now: float) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    return [o["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), _age(o, now), *_containers(o),
            _selector(spec.get("selector"))]


def _replicaset(o: dict, now: float) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    return [o["metadata"]["name"], spec.get("replicas", 1), st.get("replicas", 0), st.get("readyReplicas", 0),
            _age(o, now), *_containers(o), _selector(spec.get("selector")) or "<none>"]


def _node(o: dict, now: float) -> list:
    st, info = o.get("status") or {}, (o.get("status") or {}).get("nodeInfo") or {}
    ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
    status = ["Unknown" if ready is None else "Ready" if ready.get("status") == "True" else "NotReady"]
    if (o.get("spec") or {}).get("unschedulable"):
        status.append("SchedulingDisabled")
    labels = o["metadata"].get("labels") or {}
    roles = sorted({k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")
                    and k.split("/", 1)[1]} | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role")
                                                else set()))

    def addr(t):
        return next((a["address"] for a in st.get("addresses") or [] if a.get("type") == t), "<none>")
    return [o["metadata"]["name"], ",".join(status), ",".join(roles) or "<none>", _age(o, now),
            info.get("kubeletVersion", ""), addr("InternalIP"), addr("ExternalIP"), info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]


def _simple(*cells):
    def row(o: dict, now: float) -> list:
        return [o["metadata"]["name"], *(f(o) for f in cells), _age(o, now)]
    return row


WIDE_TEMPLATE = [_col("Containers", priority=1), _col("Images", priority=1)]
PRINTERS.update({
    "Deployment": ([NAME, _col("Ready"), _col("Up-to-date"), _col("Available"), AGE, *WIDE_TEMPLATE,
                    _col("Selector", priority=1)], _deployment),
    "ReplicaSet": ([NAME, _col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"), AGE,
                    *WIDE_TEMPLATE, _col("Selector", priority=1)], _replicaset),
    "Node": ([NAME, _col("Status"), _col("Roles"), AGE, _col("Version"), _col("Internal-IP", priority=1),
              _col("External-IP", priority=1), _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
              _col("Container-Runtime", priority=1)], _node),
    "Namespace": ([NAME, _col("Status"), AGE], _simple(lambda o: (o.get("status") or {}).get("phase", ""))),
    "ConfigMap": ([NAME, _col("Data"), AGE],
                  _simple(lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}))),
    "Secret": ([NAME, _col("Type"), _col("Data"), AGE],
               _simple(lambda o: o.get("type", ""), lambda o: len(o.get("data") or {}))),
    "ServiceAccount": ([NAME, _col("Secrets"), AGE], _simple(lambda o: len(o.get("secrets") or []))),
    "NetworkPolicy": ([NAME, _col("Pod-Selector"), AGE],
                      _simple(lambda o: _selector((o.get("spec") or {}).get("podSelector")) or "<none>")),
    "Lease": ([NAME, _col("Holder"), AGE], _simple(lambda o: (o.get("spec") or {}).get("holderIdentity") or "")),
})


DEFAULT_COLS = [NAME, _col("Created At", "date", desc="CreationTimestamp is a timestamp representing the server "
                           "time when this object was created.")]


def table(kind: str, objects: list[dict], now: float, extra: dict | None = None, *,
          include_object: str = "Metadata", list_meta: dict | None = None) -> dict:
    """The Table of objects of kind.  extra: {"additionalPrinterColumns": [...]} for a custom
    resource (custom resources without columns show AGE)."""
    if extra is not None and "additionalPrinterColumns" in (extra or {}):
        cols = [NAME, AGE]
        def cells(o, now):
            return [o["metadata"]["name"], since(o["metadata"].get("creationTimestamp"), now)]
    elif kind in PRINTERS:
        cols, cells = PRINTERS[kind]
    else:
        cols = DEFAULT_COLS
        def cells(o, now):
            return [o["metadata"]["name"], o["metadata"].get("creationTimestamp")]
    rows = []
    for o in objects:
        row = {"cells": cells(o, now)}
        if include_object == "Object":
            row["object"] = o
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": o.get("metadata", {})}
        rows.append(row)
    meta = {k: v for k, v in (list_meta or {}).items() if k in ("resourceVersion", "continue", "remainingItemCount")}
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "columnDefinitions": [dict(c) for c in cols], "rows": rows}
