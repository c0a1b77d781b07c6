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
