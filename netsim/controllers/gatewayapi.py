"""The Gateway API's semantics that both the gateway controller and the proxy need: which
HTTPRoute attaches to which listener of a Gateway (parentRefs, sectionName, allowedRoutes,
hostname intersection), which backendRefs resolve (Service, port, ReferenceGrant), and the
status the spec asks for on the Gateway and on each HTTPRoute's parents.

After gateway-api @4564255: apis/v1/{gateway,httproute,shared}_types.go (the condition types
and reasons), the hostname rules of Listener.Hostname and HTTPRoute.Hostnames, and
conformance/tests (HTTPRouteHostnameIntersection, HTTPRouteInvalidCrossNamespaceBackendRef,
HTTPRouteReferenceGrant ...).  Pure functions of plain objects (dicts as the store keeps them);
the proxy's ProxyConfig is built from these in netsim.node.ingress.gateway.
May import: the standard library and netsim.model."""

from __future__ import annotations

from dataclasses import dataclass, field

from netsim.model import endpoints, k8s

GROUP = "gateway.networking.k8s.io"
CONTROLLER_NAME = "netsim.io/gateway-controller"
CLASS_NAME = "netsim"
ROUTE_KINDS = ({"group": GROUP, "kind": "HTTPRoute"},)
PROTOCOLS = ("HTTP", "HTTPS")


# -- hostnames ---------------------------------------------------------------------------------

def _wild_match(wildcard: str, host: str) -> bool:
    """A Gateway API wildcard ("*.example.com") matches a name with one *or more* labels in
    place of the "*" (unlike Ingress, where it matches exactly one)."""
    suffix = wildcard[1:]  # ".example.com"
    return host.endswith(suffix) and len(host) > len(suffix)


def intersect(listener: str | None, route: list[str]) -> list[str]:
    """The hostnames a route serves through a listener (gateway-api Listener.Hostname doc):
    a listener without a hostname takes the route's as they are; a route without hostnames
    takes the listener's; else each pair of names that match, as the narrower of the two.
    [] means they do not intersect; ["*"] stands for "any host"."""
    if not route:
        return [listener] if listener else ["*"]
    if not listener:
        return list(route)
    out = []
    for h in route:
        if h == listener or listener.startswith("*.") and not h.startswith("*.") and _wild_match(listener, h):
            out.append(h)
        elif h.startswith("*.") and not listener.startswith("*.") and _wild_match(h, listener):
            out.append(listener)
        elif h.startswith("*.") and listener.startswith("*."):
            # Both wildcards: the longer one, if it lies inside the other.
            if _wild_match(listener, h[2:]) or h == listener:
                out.append(h)
            elif _wild_match(h, listener[2:]):
                out.append(listener)
    return list(dict.fromkeys(out))


# -- references ---------------------------------------------------------------------------------

def _meta(o: dict) -> dict:
    return o.get("metadata") or {}


def _ns(o: dict) -> str:
    return _meta(o).get("namespace") or "default"


def _name(o: dict) -> str:
    return _meta(o).get("name", "")


def refers_to(parent_ref: dict, route_ns: str, gateway: dict) -> bool:
    """A route's parentRef names this Gateway (group and kind default to the Gateway's,
    namespace to the route's)."""
    return (parent_ref.get("group", GROUP) == GROUP and parent_ref.get("kind", "Gateway") == "Gateway"
            and (parent_ref.get("namespace") or route_ns) == _ns(gateway)
            and parent_ref.get("name") == _name(gateway))


def granted(grants: list[dict], from_kind: str, from_ns: str, to_group: str, to_kind: str, to_ns: str,
            to_name: str) -> bool:
    """A ReferenceGrant in the target's namespace lets objects of from_kind in from_ns refer
    to it (apis/v1beta1/referencegrant_types.go)."""
    from_group = GROUP if from_kind in ("HTTPRoute", "Gateway") else ""
    for g in grants:
        if _ns(g) != to_ns:
            continue
        spec = g.get("spec") or {}
        if not any(f.get("group", "") == from_group and f.get("kind") == from_kind and f.get("namespace") == from_ns
                   for f in spec.get("from") or []):
            continue
        if any(t.get("group", "") == to_group and t.get("kind") == to_kind and t.get("name") in (None, "", to_name)
               for t in spec.get("to") or []):
            return True
    return False


# -- listeners --------------------------------------------------------------------------------

@dataclass
class ListenerState:
    name: str
    port: int
    protocol: str
    hostname: str | None
    allowed_from: str = "Same"
    selector: dict | None = None
    accepted_reason: str = "Accepted"  # or UnsupportedProtocol
    resolved_reason: str = "ResolvedRefs"  # or InvalidCertificateRef, RefNotPermitted, InvalidRouteKinds
    conflicted_reason: str = ""  # ProtocolConflict, HostnameConflict
    certificate: dict | None = None  # the Secret of its first certificateRef, when it resolves
    attached: int = 0

    @property
    def usable(self) -> bool:
        return self.accepted_reason == "Accepted" and self.resolved_reason == "ResolvedRefs" \
            and not self.conflicted_reason


def listeners(gateway: dict, secrets: list[dict], grants: list[dict]) -> list[ListenerState]:
    out = []
    gns = _ns(gateway)
    secret_by = {(_ns(s), _name(s)): s for s in secrets}
    for lis in (gateway.get("spec") or {}).get("listeners") or []:
        ar = (lis.get("allowedRoutes") or {})
        nss = ar.get("namespaces") or {}
        st = ListenerState(lis.get("name", ""), int(lis.get("port", 0)), lis.get("protocol", ""),
                           lis.get("hostname") or None, nss.get("from", "Same"), nss.get("selector"))
        if st.protocol not in PROTOCOLS:
            st.accepted_reason = "UnsupportedProtocol"
        kinds = ar.get("kinds")
        if kinds and not any(k.get("kind") == "HTTPRoute" and k.get("group", GROUP) == GROUP for k in kinds):
            st.resolved_reason = "InvalidRouteKinds"
        if st.protocol == "HTTPS":
            refs = ((lis.get("tls") or {}).get("certificateRefs")) or []
            ref = refs[0] if refs else {}
            ns = ref.get("namespace") or gns
            secret = secret_by.get((ns, ref.get("name")))
            if ref.get("group", "") != "" or ref.get("kind", "Secret") != "Secret" or secret is None \
                    or secret.get("type") != "kubernetes.io/tls":
                st.resolved_reason = "InvalidCertificateRef"
            elif ns != gns and not granted(grants, "Gateway", gns, "", "Secret", ns, ref.get("name")):
                st.resolved_reason = "RefNotPermitted"
            else:
                st.certificate = secret
        out.append(st)
    by_port: dict[int, list[ListenerState]] = {}
    for st in out:
        by_port.setdefault(st.port, []).append(st)
    for same in by_port.values():
        if len({s.protocol for s in same}) > 1:
            for s in same:
                s.conflicted_reason = "ProtocolConflict"
        else:
            hosts = [s.hostname for s in same]
            for s in same:
                if hosts.count(s.hostname) > 1:
                    s.conflicted_reason = "HostnameConflict"
    return out


def _allows(st: ListenerState, gateway: dict, route: dict, ns_labels: dict[str, dict]) -> bool:
    rns = _ns(route)
    if st.allowed_from == "All":
        return True
    if st.allowed_from == "None":
        return False
    if st.allowed_from == "Selector":
        return k8s.selector_matches(st.selector or {}, ns_labels.get(rns) or {})
    return rns == _ns(gateway)


# -- attachment ---------------------------------------------------------------------------------

@dataclass
class Parent:
    """One parentRef of a route that names this Gateway, and what became of it."""
    ref: dict
    listeners: list[tuple[ListenerState, list[str]]] = field(default_factory=list)  # with the hostnames
    reason: str = "Accepted"  # NotAllowedByListeners, NoMatchingListenerHostname, NoMatchingParent

    @property
    def accepted(self) -> bool:
        return self.reason == "Accepted"


def attach(gateway: dict, routes: list[dict], listener_states: list[ListenerState],
           namespaces: list[dict]) -> dict[tuple[str, str], list[Parent]]:
    """For each route naming this Gateway in a parentRef, (namespace, name) -> its Parents;
    counts attachedRoutes on the listeners."""
    ns_labels = {_name(n): _meta(n).get("labels") or {} for n in namespaces}
    out: dict[tuple[str, str], list[Parent]] = {}
    for route in routes:
        rns = _ns(route)
        spec = route.get("spec") or {}
        hostnames = spec.get("hostnames") or []
        parents = []
        for ref in spec.get("parentRefs") or []:
            if not refers_to(ref, rns, gateway):
                continue
            p = Parent(ref)
            candidates = [s for s in listener_states
                          if (not ref.get("sectionName") or s.name == ref["sectionName"])
                          and (ref.get("port") is None or s.port == ref["port"])]
            if not candidates:
                p.reason = "NoMatchingParent"
            else:
                allowed = [s for s in candidates if s.usable and _allows(s, gateway, route, ns_labels)]
                for s in allowed:
                    hosts = intersect(s.hostname, hostnames)
                    if hosts:
                        p.listeners.append((s, hosts))
                if not allowed:
                    p.reason = "NotAllowedByListeners"
                elif not p.listeners:
                    p.reason = "NoMatchingListenerHostname"
            parents.append(p)
        if parents:
            out[(rns, _name(route))] = parents
            for s in {id(s): s for p in parents for s, _ in p.listeners}.values():
                s.attached += 1
    return out


# -- backends ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedBackend:
    namespace: str
    service: str
    port: int
    weight: int
    endpoints: tuple[tuple[str, int], ...] = ()  # ready (ip, port)
    reason: str = ""  # "" resolved; else BackendNotFound, RefNotPermitted, InvalidKind
    message: str = ""


def _ready_endpoints(svc: dict, port: int, slices: list[dict]) -> tuple[tuple[str, int], ...]:
    sp = next((p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("port") == port), None)
    if sp is None:
        return ()
    return tuple(sorted(set(endpoints.ready(sp, endpoints.of_service(svc, slices)))))


def resolve(route: dict, backend_ref: dict, services: list[dict], slices: list[dict],
            grants: list[dict]) -> ResolvedBackend:
    rns = _ns(route)
    ns = backend_ref.get("namespace") or rns
    name = backend_ref.get("name", "")
    port = backend_ref.get("port")
    weight = int(backend_ref.get("weight", 1))
    if backend_ref.get("group", "") != "" or backend_ref.get("kind", "Service") != "Service":
        return ResolvedBackend(ns, name, port or 0, weight, reason="InvalidKind",
                               message=f"{backend_ref.get('kind', 'Service')} is not a supported backend kind")
    if ns != rns and not granted(grants, "HTTPRoute", rns, "", "Service", ns, name):
        return ResolvedBackend(ns, name, port or 0, weight, reason="RefNotPermitted",
                               message=f"no ReferenceGrant in namespace {ns} allows HTTPRoutes from {rns} "
                                       f"to refer to Service {name}")
    svc = next((s for s in services if _ns(s) == ns and _name(s) == name), None)
    if svc is None:
        return ResolvedBackend(ns, name, port or 0, weight, reason="BackendNotFound",
                               message=f"Service {ns}/{name} not found")
    if not any(p.get("port") == port for p in (svc.get("spec") or {}).get("ports") or []):
        return ResolvedBackend(ns, name, port or 0, weight, reason="BackendNotFound",
                               message=f"Service {ns}/{name} has no port {port}")
    return ResolvedBackend(ns, name, port, weight, _ready_endpoints(svc, port, slices))


def route_refs(route: dict, services: list[dict], slices: list[dict],
               grants: list[dict]) -> list[list[ResolvedBackend]]:
    """Each rule's backendRefs, resolved."""
    return [[resolve(route, b, services, slices, grants) for b in rule.get("backendRefs") or []]
            for rule in (route.get("spec") or {}).get("rules") or []]


# -- status -----------------------------------------------------------------------------------

def _cond(type_: str, ok: bool, reason: str, message: str, generation: int | None) -> dict:
    c = {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message}
    if generation is not None:
        c["observedGeneration"] = generation
    return c


def merge_conditions(old: list[dict] | None, new: list[dict], now: str) -> list[dict]:
    """new, each with the lastTransitionTime of the old condition of its type when its status
    did not change (metav1 SetStatusCondition), so an unchanged state writes nothing new."""
    before = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        prev = before.get(c["type"])
        same = prev is not None and prev.get("status") == c["status"]
        out.append({**c, "lastTransitionTime": prev.get("lastTransitionTime", now) if same else now})
    return out


@dataclass
class Computed:
    """Everything the Gateway's status and its routes' status.parents say, before timestamps."""
    listeners: list[ListenerState]
    parents: dict[tuple[str, str], list[Parent]]
    refs: dict[tuple[str, str], list[list[ResolvedBackend]]]


def compute(gateway: dict, routes: list[dict], grants: list[dict], services: list[dict], slices: list[dict],
            secrets: list[dict], namespaces: list[dict]) -> Computed:
    lst = listeners(gateway, secrets, grants)
    parents = attach(gateway, routes, lst, namespaces)
    by_key = {(_ns(r), _name(r)): r for r in routes}
    refs = {k: route_refs(by_key[k], services, slices, grants) for k in parents}
    return Computed(lst, parents, refs)


_LISTENER_MESSAGES = {
    "UnsupportedProtocol": "protocol is not supported (netsim's gateway serves HTTP and HTTPS)",
    "InvalidCertificateRef": "certificateRefs[0] is not a kubernetes.io/tls Secret that exists",
    "RefNotPermitted": "no ReferenceGrant allows this Gateway to use the certificate's Secret",
    "InvalidRouteKinds": "allowedRoutes.kinds names no kind this Gateway supports (HTTPRoute)",
    "ProtocolConflict": "another listener on this port uses another protocol",
    "HostnameConflict": "another listener on this port has the same hostname",
}


def gateway_status(c: Computed, gateway: dict, addresses: list[str],
                   waiting: str = "the LoadBalancer Service has no address yet") -> dict:
    """Gateway status (without timestamps): addresses, Accepted, Programmed, listeners;
    ``waiting`` says why there is no address yet."""
    gen = _meta(gateway).get("generation")
    usable = [s for s in c.listeners if s.usable]
    listeners_out = []
    for s in c.listeners:
        bad = (s.accepted_reason if s.accepted_reason != "Accepted" else "") or \
              (s.resolved_reason if s.resolved_reason != "ResolvedRefs" else "") or s.conflicted_reason
        conds = [
            _cond("Accepted", s.accepted_reason == "Accepted", s.accepted_reason,
                  _LISTENER_MESSAGES.get(s.accepted_reason, "listener accepted"), gen),
            _cond("Conflicted", bool(s.conflicted_reason), s.conflicted_reason or "NoConflicts",
                  _LISTENER_MESSAGES.get(s.conflicted_reason, "no conflicts"), gen),
            _cond("ResolvedRefs", s.resolved_reason == "ResolvedRefs", s.resolved_reason,
                  _LISTENER_MESSAGES.get(s.resolved_reason, "references resolved"), gen),
            _cond("Programmed", not bad and bool(addresses), "Programmed" if not bad and addresses else
                  ("Invalid" if bad else "Pending"),
                  _LISTENER_MESSAGES.get(bad, "listener programmed" if addresses else "waiting for an address"), gen),
        ]
        listeners_out.append({"name": s.name, "supportedKinds": [dict(k) for k in ROUTE_KINDS]
                              if s.resolved_reason != "InvalidRouteKinds" else [],
                              "attachedRoutes": s.attached, "conditions": conds})
    accepted = bool(usable) or not c.listeners
    conds = [
        _cond("Accepted", accepted, "Accepted" if accepted else "ListenersNotValid",
              "Gateway accepted by netsim" if accepted else "no listener is valid", gen),
        _cond("Programmed", accepted and bool(addresses),
              "Programmed" if accepted and addresses else ("Invalid" if not accepted else "AddressNotAssigned"),
              "proxy and LoadBalancer address ready" if accepted and addresses else
              ("no listener is valid" if not accepted else waiting), gen),
    ]
    status = {"conditions": conds, "listeners": listeners_out}
    if addresses:
        status["addresses"] = [{"type": "IPAddress", "value": a} for a in addresses]
    return status


_ROUTE_MESSAGES = {
    "Accepted": "route accepted",
    "NotAllowedByListeners": "no listener of the Gateway allows routes from this namespace",
    "NoMatchingListenerHostname": "the route's hostnames match no listener's hostname",
    "NoMatchingParent": "the Gateway has no listener named by sectionName (or port)",
}


def parent_statuses(c: Computed, gateway: dict, route: dict) -> list[dict]:
    """This Gateway's entries of the route's status.parents (without timestamps)."""
    key = (_ns(route), _name(route))
    gen = _meta(route).get("generation")
    out = []
    bad = next((b for rule in c.refs.get(key, []) for b in rule if b.reason), None)
    for p in c.parents.get(key, []):
        ref = {"group": p.ref.get("group", GROUP), "kind": p.ref.get("kind", "Gateway"),
               "name": p.ref["name"], **({"namespace": p.ref["namespace"]} if p.ref.get("namespace") else {}),
               **({"sectionName": p.ref["sectionName"]} if p.ref.get("sectionName") else {}),
               **({"port": p.ref["port"]} if p.ref.get("port") is not None else {})}
        conds = [_cond("Accepted", p.accepted, p.reason, _ROUTE_MESSAGES[p.reason], gen),
                 _cond("ResolvedRefs", bad is None, bad.reason if bad else "ResolvedRefs",
                       bad.message if bad else "all backendRefs resolved", gen)]
        out.append({"parentRef": ref, "controllerName": CONTROLLER_NAME, "conditions": conds})
    return out


def routes_of(gateway: dict, routes: list[dict]) -> list[dict]:
    """The routes with a parentRef naming this Gateway."""
    return [r for r in routes
            if any(refers_to(p, _ns(r), gateway) for p in (r.get("spec") or {}).get("parentRefs") or [])]


