"""meta.k8s.io/v1 Tables (`Accept: application/json;as=Table`) as kube-apiserver's printers make
them (pkg/printers/internalversion): the server always fills the wide columns and marks them
priority 1, and kubectl shows those with -o wide.  Kinds without a printer (upstream's neither:
Role, ClusterRole, LimitRange, CustomResourceDefinition ...) get the default convertor's NAME and
CREATED AT; custom resources NAME and their CRD version's additionalPrinterColumns (the JSONPath
subset CRDs use) or AGE, as apiextensions-apiserver's convertor makes them.
Pure.  May use: the standard library only."""

from __future__ import annotations

import re
from datetime import datetime
from fractions import Fraction


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
    """The CONTAINERS and IMAGES cells of a workload's pod template."""
    return _cells_of(_template(o).get("containers") or [])


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



# -- the other kinds kubectl users get most ------------------------------------------------------
# Where kube-apiserver's defaulting always fills a field (Job completions, PVC phase, volumeMode,
# HPA minReplicas ...), an object stored without it is printed as the defaulted one would be,
# since that is what kubectl shows on a real cluster.

_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE]?)")
_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}


def quantity(q) -> str:
    """A resource quantity as the API server stores and prints it (resource.Quantity's canonical
    String()): "1.5Gi" is 1536Mi, "0.5" 500m, "1000" 1k, "2e3" stays 2e3; text that is not a
    quantity is shown as it is."""
    m = _QUANTITY.fullmatch(str(q).strip())
    if m is None:
        return str(q)
    number, suffix = m.groups()
    sign, value = (-1 if number.startswith("-") else 1), Fraction(number.lstrip("+-"))
    if suffix in _BINARY[1:]:
        value, kind = value * 1024 ** _BINARY.index(suffix), "binary"
    elif suffix[:1] in ("e", "E"):
        value, kind = value * Fraction(10) ** int(suffix[1:]), "exponent"
    else:
        value, kind = value * Fraction(10) ** next(e for e, s in _DECIMAL.items() if s == suffix), "decimal"
    if value == 0:
        return "0"
    if kind == "binary" and (value < 1024 or value.denominator != 1):
        kind = "decimal"  # no rounding, and small values read better in decimal
    if kind == "binary":
        n, e = int(value), 0
        while n % 1024 == 0 and e < len(_BINARY) - 1:
            n, e = n // 1024, e + 1
        return f"{'-' if sign < 0 else ''}{n}{_BINARY[e]}"
    nanos = -(-value * 10 ** 9 // 1)  # the API keeps nano precision, rounding up
    mantissa, exp = int(nanos), -9
    while mantissa % 10 == 0:
        mantissa, exp = mantissa // 10, exp + 1
    mantissa, exp = mantissa * 10 ** (exp % 3), exp - exp % 3
    text = f"{'-' if sign < 0 else ''}{mantissa}"
    if kind == "decimal" and exp in _DECIMAL:
        return text + _DECIMAL[exp]
    return text + (f"e{exp}" if exp else "")


def _spec(o: dict) -> dict:
    return o.get("spec") or {}


def _status(o: dict) -> dict:
    return o.get("status") or {}


def _format_selector(sel: dict | None) -> str:
    """metav1.FormatLabelSelector: <none> for an empty or missing selector."""
    return _selector(sel) or "<none>"


def _more(items: list[str], count: int, most: int = 3, empty: str = "<unset>") -> str:
    """The first `most` of count items, then "+ N more..." (listWithMoreString)."""
    text = ",".join(items[:most])
    if count > most:
        return f"{text} + {count - most} more..."
    return text or empty


def _template(o: dict) -> dict:
    return (_spec(o).get("template") or {}).get("spec") or {}


def _cells_of(containers: list[dict]) -> list[str]:
    return [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)]


def _daemonset(o: dict, now: float) -> list:
    st = _status(o)
    return [o["metadata"]["name"], *(st.get(f, 0) for f in ("desiredNumberScheduled", "currentNumberScheduled",
                                                            "numberReady", "updatedNumberScheduled",
                                                            "numberAvailable")),
            _labels(_template(o).get("nodeSelector")), _age(o, now), *_containers(o),
            _format_selector(_spec(o).get("selector"))]


def _statefulset(o: dict, now: float) -> list:
    return [o["metadata"]["name"], f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 1)}",
            _age(o, now), *_containers(o)]


def _condition(o: dict, kind: str) -> bool:
    """The first condition of the type is True (hasJobCondition)."""
    c = next((c for c in _status(o).get("conditions") or [] if c.get("type") == kind), None)
    return c is not None and c.get("status") == "True"


def _seconds(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _job(o: dict, now: float) -> list:
    spec, st = _spec(o), _status(o)
    succeeded, completions = st.get("succeeded", 0), spec.get("completions")
    if completions is None and spec.get("parallelism") is None:
        completions = 1  # the API server defaults both to 1 when neither is set
    if completions is not None:
        done = f"{succeeded}/{completions}"
    else:
        parallelism = spec.get("parallelism") or 0
        done = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start, end = st.get("startTime"), st.get("completionTime")
    if not start:
        duration = ""
    elif not end:
        duration = since(start, now)
    else:
        duration = human_duration(_seconds(end) - _seconds(start))
    if _condition(o, "Complete"):
        status = "Complete"
    elif _condition(o, "Failed"):
        status = "Failed"
    elif o["metadata"].get("deletionTimestamp"):
        status = "Terminating"
    elif _condition(o, "Suspended"):
        status = "Suspended"
    elif _condition(o, "FailureTarget"):
        status = "FailureTarget"
    else:
        status = "Running"
    return [o["metadata"]["name"], status, done, duration, _age(o, now), *_containers(o),
            _format_selector(spec.get("selector"))]


def _cronjob(o: dict, now: float) -> list:
    spec, st = _spec(o), _status(o)
    job = (spec.get("jobTemplate") or {}).get("spec") or {}
    containers = ((job.get("template") or {}).get("spec") or {}).get("containers") or []
    last = since(st["lastScheduleTime"], now) if st.get("lastScheduleTime") else "<none>"
    return [o["metadata"]["name"], spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            "True" if spec.get("suspend") else "False", len(st.get("active") or []), last, _age(o, now),
            *_cells_of(containers), _format_selector(job.get("selector"))]


def _host_port(ip: str, port) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _endpoints(o: dict, now: float) -> list:
    found, count = [], 0
    for ss in o.get("subsets") or []:
        addrs = [a.get("ip", "") for a in ss.get("addresses") or []]
        ports = ss.get("ports") or [None]  # headless services may have no ports
        for p in ports:
            count += len(addrs)
            found += [a if p is None else _host_port(a, p.get("port")) for a in addrs]
    text = _more(found, count, empty="")
    return [o["metadata"]["name"], text if o.get("subsets") else "<none>", _age(o, now)]


def _endpointslice(o: dict, now: float) -> list:
    ports = o.get("ports") or []
    names = [str(p["port"]) if p.get("port") is not None else p.get("name") or "*" for p in ports]
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    return [o["metadata"]["name"], o.get("addressType", ""), _more(names, len(names)), _more(addrs, len(addrs)),
            _age(o, now)]


def _lb_ingress(st: dict) -> str:
    ingress = (st.get("loadBalancer") or {}).get("ingress") or []
    return ",".join(sorted({i.get("ip") or i.get("hostname") for i in ingress} - {None, ""}))


def _ingress(o: dict, now: float) -> list:
    spec = _spec(o)
    rules = spec.get("rules") or []
    hosts, more = [], False
    for r in rules:  # formatHosts: "more" once a rule follows the third host, counted in rules
        more = more or len(hosts) == 3
        if not more and r.get("host"):
            hosts.append(r["host"])
    text = (",".join(hosts) + (f" + {len(rules) - 3} more..." if more else "")) if hosts else "*"
    return [o["metadata"]["name"], spec.get("ingressClassName") or "<none>", text, _lb_ingress(_status(o)),
            "80, 443" if spec.get("tls") else "80", _age(o, now)]


def _ingressclass(o: dict, now: float) -> list:
    p = _spec(o).get("parameters")
    params = "<none>" if not p else (p.get("kind", "") + (f".{p['apiGroup']}" if p.get("apiGroup") else "")
                                     + "/" + p.get("name", ""))
    return [o["metadata"]["name"], _spec(o).get("controller", ""), params, _age(o, now)]


def _core_event(o: dict) -> dict:
    """An events.k8s.io/v1 Event in core/v1's field names (the API server prints both alike)."""
    if not str(o.get("apiVersion", "")).startswith("events.k8s.io/"):
        return o
    names = {"deprecatedFirstTimestamp": "firstTimestamp", "deprecatedLastTimestamp": "lastTimestamp",
             "deprecatedCount": "count", "regarding": "involvedObject", "note": "message",
             "deprecatedSource": "source"}
    return {names.get(k, k): v for k, v in o.items()}


def _event(o: dict, now: float) -> list:
    e = _core_event(o)
    first = since(e.get("firstTimestamp") or e.get("eventTime"), now)
    last = since(e["lastTimestamp"], now) if e.get("lastTimestamp") else first
    count = e.get("count") or 1  # singleton events of the new API carry no count
    if e.get("series"):
        last = since(e["series"].get("lastObservedTime"), now)
        count = e["series"].get("count", 0)
    inv = e.get("involvedObject") or {}
    target = inv.get("kind", "").lower() + (f"/{inv['name']}" if inv.get("name") else "")
    src = e.get("source") or {}
    component = src.get("component") or e.get("reportingController") or ""
    instance = src.get("host") or e.get("reportingInstance") or ""
    return [last, e.get("type", ""), e.get("reason", ""), target, inv.get("fieldPath", ""),
            f"{component}, {instance}" if instance else component, (e.get("message") or "").strip(), first, count,
            o["metadata"]["name"]]


def _binding(o: dict, now: float) -> list:
    ref = o.get("roleRef") or {}
    subjects = o.get("subjects") or []

    def of(kind):
        return ", ".join(f"{s.get('namespace', '')}/{s.get('name', '')}" if kind == "ServiceAccount"
                         else s.get("name", "") for s in subjects if s.get("kind") == kind)
    return [o["metadata"]["name"], f"{ref.get('kind', '')}/{ref.get('name', '')}", _age(o, now), of("User"),
            of("Group"), of("ServiceAccount")]


def _access_modes(modes: list | None) -> str:
    """GetAccessModesAsString: each mode once, in a fixed order."""
    short = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP"))
    return ",".join(s for m, s in short if m in (modes or []))


def _storage_class(o: dict) -> str:
    """The beta annotation first, then spec.storageClassName (GetPersistentVolume(Claim)Class)."""
    ann = o["metadata"].get("annotations") or {}
    if "volume.beta.kubernetes.io/storage-class" in ann:
        return ann["volume.beta.kubernetes.io/storage-class"]
    return _spec(o).get("storageClassName") or ""


def _pvc(o: dict, now: float) -> list:
    spec, st = _spec(o), _status(o)
    phase = "Terminating" if o["metadata"].get("deletionTimestamp") else st.get("phase") or "Pending"
    bound = bool(spec.get("volumeName"))
    return [o["metadata"]["name"], phase, spec.get("volumeName", ""),
            quantity((st.get("capacity") or {}).get("storage", "0")) if bound else "",
            _access_modes(st.get("accessModes")) if bound else "", _storage_class(o),
            spec.get("volumeAttributesClassName") or "<unset>", _age(o, now), spec.get("volumeMode") or "Filesystem"]


def _pv(o: dict, now: float) -> list:
    spec, st = _spec(o), _status(o)
    claim = spec.get("claimRef")
    phase = "Terminating" if o["metadata"].get("deletionTimestamp") else st.get("phase") or "Pending"
    return [o["metadata"]["name"], quantity((spec.get("capacity") or {}).get("storage", "0")),
            _access_modes(spec.get("accessModes")), spec.get("persistentVolumeReclaimPolicy") or "Retain", phase,
            f"{claim.get('namespace', '')}/{claim.get('name', '')}" if claim else "", _storage_class(o),
            spec.get("volumeAttributesClassName") or "<unset>", st.get("reason", ""), _age(o, now),
            spec.get("volumeMode") or "Filesystem"]


def _hpa_metric(spec: dict, status: dict | None) -> str:
    """One target of formatHPAMetrics: current/target, <unknown> before the first measurement."""
    kind = spec.get("type", "")
    key = kind[0].lower() + kind[1:] if kind else ""
    source, current = spec.get(key) or {}, ((status or {}).get(key) or {}).get("current") or {}
    target = source.get("target") or {}

    def q(values: dict, field: str, missing: str = "<unknown>") -> str:
        return quantity(values[field]) if values.get(field) is not None else missing
    if kind in ("External", "Object"):
        if target.get("averageValue") is not None:
            return f"{q(current, 'averageValue')}/{q(target, 'averageValue')} (avg)"
        return f"{q(current, 'value')}/{q(target, 'value', '')}"
    if kind == "Pods":
        return f"{q(current, 'averageValue')}/{q(target, 'averageValue', '')}"
    if kind in ("Resource", "ContainerResource"):
        if target.get("averageValue") is not None:
            return f"{source.get('name', '')}: {q(current, 'averageValue')}/{q(target, 'averageValue')}"
        now = f"{current['averageUtilization']}%" if current.get("averageUtilization") is not None else "<unknown>"
        want = f"{target['averageUtilization']}%" if target.get("averageUtilization") is not None else "<auto>"
        return f"{source.get('name', '')}: {now}/{want}"
    return "<unknown type>"


def _hpa(o: dict, now: float) -> list:
    spec, st = _spec(o), _status(o)
    metrics, current = spec.get("metrics") or [], st.get("currentMetrics") or []
    shown = [_hpa_metric(m, current[i] if i < len(current) else None) for i, m in enumerate(metrics)]
    targets = "<none>" if not shown else ", ".join(shown[:2]) + (f" + {len(shown) - 2} more..." if len(shown) > 2
                                                                  else "")
    ref = spec.get("scaleTargetRef") or {}
    return [o["metadata"]["name"], f"{ref.get('kind', '')}/{ref.get('name', '')}", targets,
            str(spec.get("minReplicas", 1)), spec.get("maxReplicas", 0), st.get("currentReplicas", 0), _age(o, now)]


def _pdb(o: dict, now: float) -> list:
    spec = _spec(o)
    return [o["metadata"]["name"], str(spec["minAvailable"]) if spec.get("minAvailable") is not None else "N/A",
            str(spec["maxUnavailable"]) if spec.get("maxUnavailable") is not None else "N/A",
            _status(o).get("disruptionsAllowed", 0), _age(o, now)]


def _storageclass(o: dict, now: float) -> list:
    ann = o["metadata"].get("annotations") or {}
    default = "true" in (ann.get("storageclass.kubernetes.io/is-default-class"),
                         ann.get("storageclass.beta.kubernetes.io/is-default-class"))
    return [o["metadata"]["name"] + (" (default)" if default else ""), o.get("provisioner", ""),
            o.get("reclaimPolicy") or "Delete", o.get("volumeBindingMode") or "Immediate",
            bool(o.get("allowVolumeExpansion")), _age(o, now)]


def _priorityclass(o: dict, now: float) -> list:
    return [o["metadata"]["name"], o.get("value", 0), bool(o.get("globalDefault")), _age(o, now),
            o.get("preemptionPolicy") or "PreemptLowerPriority"]


def _resourcequota(o: dict, now: float) -> list:
    st = _status(o)
    hard, used = st.get("hard") or {}, st.get("used") or {}
    request, limit = [], []
    for r in sorted(hard):
        (limit if r.split(".")[0] == "limits" and "." in r else request).append(
            f"{r}: {quantity(used.get(r, '0'))}/{quantity(hard[r])}")
    return [o["metadata"]["name"], ", ".join(request), ", ".join(limit), _age(o, now)]


def _replicationcontroller(o: dict, now: float) -> list:
    spec, st = _spec(o), _status(o)
    return [o["metadata"]["name"], spec.get("replicas", 1), st.get("replicas", 0), st.get("readyReplicas", 0),
            _age(o, now), *_containers(o), _labels(spec.get("selector"))]


def _cols(*names: str, wide: tuple[str, ...] = (), types: dict | None = None) -> list[dict]:
    """NAME, the named columns (Age as AGE), then the -o wide ones at priority 1."""
    types = types or {}
    return [NAME, *(AGE if n == "Age" else _col(n, types.get(n, "string")) for n in names),
            *(_col(n, types.get(n, "string"), priority=1) for n in wide)]


INTS = {n: "integer" for n in ("Desired", "Current", "Ready", "Up-to-date", "Available", "Active",
                               "Allowed Disruptions", "Value")}
TEMPLATE_WIDE = ("Containers", "Images", "Selector")
EVENT_COLS = [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Subobject", priority=1),
              _col("Source", priority=1), _col("Message"), _col("First Seen", priority=1),
              _col("Count", priority=1), {**NAME, "priority": 1}]
BINDING_WIDE = ("Users", "Groups", "ServiceAccounts")
PRINTERS.update({
    "DaemonSet": (_cols("Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age",
                        wide=TEMPLATE_WIDE, types=INTS), _daemonset),
    "StatefulSet": (_cols("Ready", "Age", wide=("Containers", "Images")), _statefulset),
    "Job": (_cols("Status", "Completions", "Duration", "Age", wide=TEMPLATE_WIDE), _job),
    "CronJob": (_cols("Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age", wide=TEMPLATE_WIDE,
                      types={**INTS, "Suspend": "boolean"}), _cronjob),
    "Endpoints": (_cols("Endpoints", "Age"), _endpoints),
    "EndpointSlice": (_cols("AddressType", "Ports", "Endpoints", "Age"), _endpointslice),
    "Ingress": (_cols("Class", "Hosts", "Address", "Ports", "Age"), _ingress),
    "IngressClass": (_cols("Controller", "Parameters", "Age"), _ingressclass),
    "Event": (EVENT_COLS, _event),
    "RoleBinding": (_cols("Role", "Age", wide=BINDING_WIDE), _binding),
    "ClusterRoleBinding": (_cols("Role", "Age", wide=BINDING_WIDE), _binding),
    "PersistentVolumeClaim": (_cols("Status", "Volume", "Capacity", "Access Modes", "StorageClass",
                                    "VolumeAttributesClass", "Age", wide=("VolumeMode",)), _pvc),
    "PersistentVolume": (_cols("Capacity", "Access Modes", "Reclaim Policy", "Status", "Claim", "StorageClass",
                               "VolumeAttributesClass", "Reason", "Age", wide=("VolumeMode",)), _pv),
    "HorizontalPodAutoscaler": (_cols("Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"), _hpa),
    "PodDisruptionBudget": (_cols("Min Available", "Max Unavailable", "Allowed Disruptions", "Age", types=INTS),
                            _pdb),
    "StorageClass": (_cols("Provisioner", "ReclaimPolicy", "VolumeBindingMode", "AllowVolumeExpansion", "Age"),
                     _storageclass),
    "PriorityClass": (_cols("Value", "Global-Default", "Age", "PreemptionPolicy",
                            types={**INTS, "Global-Default": "boolean"}), _priorityclass),
    "ResourceQuota": (_cols("Request", "Limit", "Age"), _resourcequota),
    "ReplicationController": (_cols("Desired", "Current", "Ready", "Age", wide=TEMPLATE_WIDE, types=INTS),
                              _replicationcontroller),
})
# Kinds kube-apiserver has no printer for either: the default NAME and CREATED AT, as kubectl shows.
DEFAULT_PRINTED = ("Role", "ClusterRole", "LimitRange", "CustomResourceDefinition")
DEFAULT_COLS = [NAME, _col("Created At", "date", desc="CreationTimestamp is a timestamp representing the server "
                           "time when this object was created.")]


# -- custom resources: the CRD's additionalPrinterColumns -----------------------------------------

def _jsonpath_steps(path: str) -> list:
    """The steps of the JSONPath subset CRDs use: .a.b, .a[0].b, .a[*].b, ['a.b'], [?(@.a=="x")]
    (str: a field, int: an index, None: every item, a tuple: the items whose field equals)."""
    steps, i, p = [], 0, path.strip().removeprefix("{").removesuffix("}").removeprefix("$")
    while i < len(p):
        if p[i] == ".":
            j, name = i + 1, ""
            while j < len(p) and p[j] not in ".[":
                if p[j] == "\\" and j + 1 < len(p):  # an escaped dot in a field name
                    j += 1
                name += p[j]
                j += 1
            steps.append(name)
            i = j
        elif p[i] == "[":
            j = p.index("]", i)
            inner = p[i + 1:j].strip()
            if inner == "*":
                steps.append(None)
            elif inner.startswith("?(@.") and inner.endswith(")") and "==" in inner:
                # A filter on a field of each item, as gateway-api's columns use:
                # [?(@.type=="Accepted")] (a step: (field path, value)).
                field, _, value = inner[4:-1].partition("==")
                steps.append((tuple(field.strip().split(".")), value.strip().strip("'\"")))
            elif inner[:1] in "'\"":
                steps.append(inner[1:-1])
            else:
                steps.append(int(inner))
            i = j + 1
        else:
            raise ValueError(f"unsupported JSONPath {path!r}")
    return steps


def _at(obj, fields: tuple[str, ...]):
    for f in fields:
        obj = obj.get(f) if isinstance(obj, dict) else None
    return None if obj is None else _go_text(obj)


def jsonpath_first(obj, path: str):
    """The first value JSONPath path finds in obj, or None (missing keys allowed)."""
    found = [obj]
    for step in _jsonpath_steps(path):
        nxt = []
        for v in found:
            if isinstance(step, tuple) and isinstance(v, list):
                nxt += [x for x in v if _at(x, step[0]) == step[1]]
            elif step is None and isinstance(v, list):
                nxt += v
            elif step is None and isinstance(v, dict):
                nxt += list(v.values())
            elif (isinstance(step, int) and isinstance(v, list) and -len(v) <= step < len(v)) or \
                    (isinstance(step, str) and isinstance(v, dict) and step in v):
                nxt.append(v[step])
        found = nxt
    return found[0] if found else None


def _go_text(v) -> str:
    """A value as Go's fmt.Print writes it, as kubectl's JSONPath printer does for string columns."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_go_text(x)}" for k, x in sorted(v.items())) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_go_text(x) for x in v) + "]"
    return str(v)


def _cr_cell(kind: str, v, now: float):
    """cellForJSONValue: a cell of the column's type, None (kubectl leaves it blank) when it does not fit."""
    if v is None:
        return None
    if kind == "string":
        return _go_text(v)
    if kind == "integer" and isinstance(v, (int, float)) and not isinstance(v, bool):
        return int(v)
    if kind == "number" and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if kind == "boolean" and isinstance(v, bool):
        return v
    if kind == "date" and isinstance(v, str):
        return since(v, now)
    return None


def custom_columns(columns: list[dict] | None) -> tuple[list[dict], object]:
    """Columns and row function for a custom resource: NAME, then the CRD version's
    additionalPrinterColumns, or AGE when it declares none (serveDefaultColumnsIfEmpty)."""
    columns = list(columns or []) or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
                                        "description": AGE["description"]}]
    cols = [NAME] + [_col(c.get("name", ""), c.get("type", "string"), c.get("priority", 0), c.get("format", ""),
                          c.get("description") or "Custom resource definition column (in JSONPath format): "
                          + c.get("jsonPath", "")) for c in columns]

    def cells(o: dict, now: float) -> list:
        return [o["metadata"]["name"], *(_cr_cell(c.get("type", "string"), jsonpath_first(o, c.get("jsonPath", "")),
                                                  now) for c in columns)]
    return cols, cells


def table(kind: str, objects: list[dict], now: float, extra: dict | None = None, *,
          include_object: str = "Metadata", list_meta: dict | None = None) -> dict:
    """The Table of objects of kind.  extra: {"additionalPrinterColumns": [...]} for a custom
    resource (a custom resource without columns shows AGE)."""
    if extra is not None and "additionalPrinterColumns" in extra:
        cols, cells = custom_columns(extra["additionalPrinterColumns"])
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
