"""`netsim check`: a scenario's connectivity expectations, probed with real connections and
printed as the Kubernetes e2e NetworkPolicy tests print reachability: expected, observed and
comparison tables (rows from, columns to, ``.`` allowed, ``X`` denied, ``-`` not probed).

With no expectations it checks that every pod reaches every other pod and every Service.

A `pods/NS/SELECTOR` reference (e.g. ``pods/default/app=web``) stands for every running pod
in NS that the label selector matches: it is expanded into one `pod/NS/NAME` per pod before
probing, so each pod gets its own row or column (a pod is not probed against itself when a
selector brought it in).  A selector that matches no running pod is a mismatch, whatever was
expected, and so is a probe that cannot be made (a pod not found, a headless Service): neither
shows anything about the dataplane.

An expectation with `host`, `path`, `scheme` or `status` is one HTTP request (netsim.observe.
httpprobe) judged by its status (200 unless `status` says otherwise) and, with `answeredBy`, by
the pod the responder's echo names: a pod name prefix, or a label selector the pod must match.
Its column in the tables is the target with the host and path (``lb/ns/svc backend.aa.com/``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from netsim.api.store import NotFound, Store
from netsim.model import k8s
from netsim.model.scenario import is_selector_ref, parse_selector, split_pod_ref
from netsim.observe import httpprobe, probe


@dataclass(frozen=True)
class Expect:
    src: str
    dst: str
    port: int | None
    protocol: str  # TCP, UDP, ICMP
    allow: bool
    host: str | None = None  # HTTP: with any of host, path, scheme, status
    path: str | None = None
    scheme: str | None = None
    status: int | None = None
    answered_by: str | None = None

    @property
    def http(self) -> bool:
        return any(v is not None for v in (self.host, self.path, self.scheme, self.status))

    @property
    def column(self) -> str:
        """The target as the tables show it: with the host and path for HTTP."""
        if not self.http:
            return self.dst
        return f"{self.dst} {self.host or ''}{self.path or '/'}"

    @property
    def kind(self) -> str:
        return (self.scheme or "http").upper() if self.http else self.protocol


@dataclass
class Outcome:
    expect: Expect
    allowed: bool
    detail: str
    error: bool = False  # nothing was probed: the expectation could not be checked
    wrong: str | None = None  # an answer came, but not the expected one (status, pod)

    @property
    def ok(self) -> bool:
        return not self.error and self.allowed == self.expect.allow and self.wrong is None


def from_scenario(scenario) -> list[Expect]:
    return [Expect(e.from_, e.to, e.port, e.protocol, e.expect == "allow", e.host, e.path, e.scheme, e.status,
                   e.answeredBy) for e in scenario.expect]


def answered_by_matches(store: Store, want: str, namespace: str | None, pod: str | None) -> bool:
    """Whether the pod that answered is one ``want`` names: a name prefix, or a label selector
    its labels match."""
    if not pod:
        return False
    if not any(c in want for c in "=!( "):
        return pod.startswith(want)
    try:
        labels = store.get(k8s.key("Pod", namespace or "default", pod))["metadata"].get("labels")
    except NotFound:
        return False
    return k8s.selector_matches(parse_selector(want), labels)


def judge(store: Store, e: Expect, r: dict) -> Outcome:
    """An Outcome from a probe's (or an HTTP request's) result."""
    allowed = r["result"] == "allow"
    if not e.http:
        detail = f"{r['result']} ({r['reason']})"
        if allowed and r.get("responder"):
            detail += f" by {r['responder']}"
    elif allowed:
        detail = f"HTTP {r['status']}" + (f" from pod {r['namespace']}/{r['responder']}" if r.get("responder")
                                          else f" from {r.get('server') or 'a server that is no netsim pod'}")
    else:
        detail = f"no HTTP answer ({r['reason']})"
    wrong = None
    if allowed and e.allow:
        want = e.status if e.status is not None else (200 if e.http else None)
        if want is not None and r.get("status") != want:
            wrong = f"expected status {want}"
        elif e.answered_by and not answered_by_matches(store, e.answered_by, r.get("namespace"), r.get("responder")):
            wrong = (f"that pod does not match answeredBy {e.answered_by}" if r.get("responder")
                     else f"no pod's echo came back, expected one matching answeredBy {e.answered_by}")
    return Outcome(e, allowed, detail + (f": {wrong}" if wrong else ""), wrong=wrong)


def everything(store: Store) -> list[Expect]:
    """Every running pod to every other pod (its first declared port) and to every Service
    with a ClusterIP (its first port): all allowed."""
    pods = [p for p in store.list(k8s.prefix("Pod"))[0]
            if (p.get("status") or {}).get("phase") == "Running" and not p["spec"].get("hostNetwork")]
    refs = [f"pod/{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods]
    ports = {r: next((pt["containerPort"] for c in p["spec"]["containers"] for pt in c.get("ports") or []), None)
             for r, p in zip(refs, pods, strict=True)}
    svcs = [s for s in store.list(k8s.prefix("Service"))[0]
            if (s.get("spec") or {}).get("clusterIP") not in (None, "", "None") and s["spec"].get("ports")
            and s["spec"].get("selector")]
    out = []
    for src in refs:
        for dst in refs:
            if src != dst and ports[dst]:
                out.append(Expect(src, dst, ports[dst], "TCP", True))
        for s in svcs:
            port = s["spec"]["ports"][0]
            out.append(Expect(src, f"svc/{s['metadata']['namespace']}/{s['metadata']['name']}", port["port"],
                              port.get("protocol", "TCP"), True))
    return out


def _running_pods(store: Store) -> list[dict]:
    return [p for p in store.list(k8s.prefix("Pod"))[0]
            if (p.get("status") or {}).get("phase") == "Running" and p["status"].get("podIP")
            and not p["metadata"].get("deletionTimestamp")]


def select_pods(pods: list[dict], ref: str) -> list[str]:
    """`pod/NS/NAME` of every pod in ``pods`` that a `pods/NS/SELECTOR` ref matches, by name."""
    ns, text = split_pod_ref(ref)
    selector = parse_selector(text)
    return [f"pod/{ns}/{p['metadata']['name']}" for p in sorted(pods, key=lambda p: p["metadata"]["name"])
            if p["metadata"].get("namespace") == ns and k8s.selector_matches(selector, p["metadata"].get("labels"))]


def expand(store: Store, expects: list[Expect]) -> list[Expect | Outcome]:
    """Each expectation with its selector refs replaced by the pods they match (one Expect per
    pair, in order); an Outcome (a mismatch) for a selector that matches no running pod."""
    pods: list[dict] | None = None
    out: list[Expect | Outcome] = []
    for e in expects:
        sides = []
        for ref in (e.src, e.dst):
            if is_selector_ref(ref):
                pods = _running_pods(store) if pods is None else pods
                sides.append(select_pods(pods, ref))
            else:
                sides.append([ref])
        empty = next((ref for ref, side in zip((e.src, e.dst), sides, strict=True) if not side), None)
        if empty is not None:
            ns, text = split_pod_ref(empty)
            out.append(Outcome(e, False, f"no running pod in namespace {ns} matches {text}", error=True))
            continue
        selected = is_selector_ref(e.src) or is_selector_ref(e.dst)
        out += [replace(e, src=s, dst=d) for s in sides[0] for d in sides[1] if not (selected and s == d)]
    return out


def elsewhere(cluster, store: Store, items: list[Expect | Outcome]) -> tuple[list[Expect | Outcome], list[Expect]]:
    """On a machine that joined a multi-machine cluster: the pairs whose source runs here, and
    those whose source pod runs on another machine (the check there probes them)."""
    if cluster is None or not cluster.joined:
        return items, []
    here, there = [], []
    for e in items:
        (there if isinstance(e, Expect) and probe.on_another_machine(cluster, store, e.src) else here).append(e)
    return here, there


def run(cluster, store: Store, expects: list[Expect], timeout: float = 1.0,
        skipped: list[Expect] | None = None) -> list[Outcome]:
    """Probe every pair; pairs another machine must probe go to ``skipped``."""
    items, there = elsewhere(cluster, store, expand(store, expects))
    if skipped is not None:
        skipped += there

    def one(e: Expect | Outcome) -> Outcome:
        if isinstance(e, Outcome):
            return e
        try:
            if e.http:
                r = httpprobe.http_probe(cluster, store, e.src, e.dst, e.port, e.host, e.path or "/",
                                         e.scheme or "http", timeout)
            else:
                r = probe.probe(cluster, store, e.src, e.dst, e.port, e.protocol.lower(), timeout)
        except probe.ProbeError as exc:
            return Outcome(e, False, f"not probed: {exc}", error=True)
        return judge(store, e, r)
    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(one, items))


def _table(rows: list[str], cols: list[str], cell) -> list[str]:
    widths = [max(len(c), 1) for c in cols]
    head = max((len(r) for r in rows), default=1)
    out = [" " * head + "  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    for r in rows:
        out.append(r.ljust(head) + "  " + "  ".join(cell(r, c).rjust(w) for c, w in zip(cols, widths, strict=True)))
    return out


def report(outcomes: list[Outcome]) -> list[str]:
    """Expected / observed / comparison tables per protocol and port."""
    groups: dict[tuple[str, int | None], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.expect.kind, o.expect.port), []).append(o)
    lines = []
    for (proto, port), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        rows = sorted({o.expect.src for o in items})
        cols = sorted({o.expect.column for o in items})
        by = {(o.expect.src, o.expect.column): o for o in items}

        def cell(kind, by=by):
            def f(r, c):
                o = by.get((r, c))
                if o is None:
                    return "-"
                value = {"expected": o.expect.allow, "observed": o.allowed}.get(kind)
                if kind == "comparison":
                    return "." if o.ok else "X"
                return "." if value else "X"
            return f
        title = f"{proto}" + (f"/{port}" if port else "")
        wrong = sum(not o.ok for o in items)
        lines.append(f"== {title}: {len(items) - wrong}/{len(items)} as expected")
        for kind in ("expected", "observed", "comparison"):
            lines.append(f"{kind}:")
            lines += _table(rows, cols, cell(kind))
        lines.append("")
    return lines
