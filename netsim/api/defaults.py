"""The API defaults kube-apiserver writes into built-in objects, as upstream's SetDefaults_*
functions (pkg/apis/{core,apps,batch}/v1/defaults.go and their generated defaulters) do.

Pure functions over the JSON document: a field is filled only when the writer left it out
(or, as upstream, left the zero value in it), so a set value is always kept and defaulting an
object twice changes nothing.  Knows the document shapes of netsim.model.k8s only; the
registry runs :func:`apply_defaults` on every write, whoever the writer, so a controller
hashing a pod template (the Deployment's pod-template-hash) always sees it defaulted.
"""

from __future__ import annotations

from netsim.model import gatewayapi

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_MODE = 420  # 0644, the mode of files in secret, configMap, downwardAPI and projected volumes
CLIENT_IP_AFFINITY_SECONDS = 10800


def _set(d: dict, key: str, value: object) -> None:
    """Upstream defaults a field when it holds its zero value, not only when it is absent."""
    if d.get(key) in (None, ""):
        d[key] = value


def image_tag(image: str) -> str:
    """The tag of an image reference ('latest' when it has none, '' when pinned by digest), as
    upstream's parsers.ParseImageName reports it."""
    if "@" in image:
        return ""
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def _probe(probe: dict | None) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):
        if not probe.get(key):
            probe[key] = value
    if isinstance(probe.get("httpGet"), dict):
        _set(probe["httpGet"], "path", "/")
        _set(probe["httpGet"], "scheme", "HTTP")


def _handler(handler: dict | None) -> None:
    if isinstance(handler, dict) and isinstance(handler.get("httpGet"), dict):
        _set(handler["httpGet"], "path", "/")
        _set(handler["httpGet"], "scheme", "HTTP")


def _container(c: dict) -> None:
    if not c.get("imagePullPolicy"):
        c["imagePullPolicy"] = "Always" if image_tag(str(c.get("image") or "")) == "latest" else "IfNotPresent"
    _set(c, "terminationMessagePath", TERMINATION_MESSAGE_PATH)
    _set(c, "terminationMessagePolicy", "File")
    for p in c.get("ports") or []:
        _set(p, "protocol", "TCP")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(name))
    for name in ("postStart", "preStop"):
        _handler((c.get("lifecycle") or {}).get(name))
    for env in c.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            _set(field_ref, "apiVersion", "v1")


def _volume(v: dict) -> None:
    sources = [k for k in v if k != "name"]
    if not sources:
        v["emptyDir"] = {}
    for kind in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(v.get(kind), dict) and v[kind].get("defaultMode") is None:
            v[kind]["defaultMode"] = DEFAULT_MODE
    for source in (v.get("projected") or {}).get("sources") or []:
        token = source.get("serviceAccountToken")
        if isinstance(token, dict) and token.get("expirationSeconds") is None:
            token["expirationSeconds"] = 3600
    if isinstance(v.get("hostPath"), dict) and v["hostPath"].get("type") is None:
        v["hostPath"]["type"] = ""


def pod_spec(spec: dict) -> None:
    """SetDefaults_PodSpec and what it reaches (containers, ports, probes, volumes): for a Pod
    and for every pod template."""
    _set(spec, "dnsPolicy", "ClusterFirst")
    _set(spec, "restartPolicy", "Always")
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = 30
    _set(spec, "schedulerName", "default-scheduler")
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _container(c)
    for v in spec.get("volumes") or []:
        if isinstance(v, dict):
            _volume(v)


def pod(obj: dict) -> None:
    """SetDefaults_Pod on top of the spec's: what only a Pod gets, not a template."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    pod_spec(spec)
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            resources = c.get("resources") or {}
            if resources.get("limits"):
                resources["requests"] = {**resources["limits"], **(resources.get("requests") or {})}
                c["resources"] = resources
            if spec.get("hostNetwork"):
                for p in c.get("ports") or []:
                    if not p.get("hostPort"):
                        p["hostPort"] = p.get("containerPort")


def template(holder: dict | None) -> None:
    """The pod template under ``holder['template']``, if there is one."""
    if isinstance(holder, dict) and isinstance(holder.get("template"), dict):
        spec = holder["template"].get("spec")
        if isinstance(spec, dict):
            pod_spec(spec)


def service(spec: dict) -> None:
    """SetDefaults_Service (the spec; ClusterIPs and ipFamilies are the registry's)."""
    _set(spec, "type", "ClusterIP")
    _set(spec, "sessionAffinity", "None")
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        client_ip = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        if client_ip.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": CLIENT_IP_AFFINITY_SECONDS}}
    for p in spec.get("ports") or []:
        _set(p, "protocol", "TCP")
        if p.get("targetPort") in (None, 0, ""):
            p["targetPort"] = p.get("port")
    stype = spec["type"]
    if stype in ("NodePort", "LoadBalancer") or (stype == "ClusterIP" and spec.get("externalIPs")):
        _set(spec, "externalTrafficPolicy", "Cluster")
    if stype in ("ClusterIP", "NodePort", "LoadBalancer"):
        _set(spec, "internalTrafficPolicy", "Cluster")
    if stype == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True


def _rolling(spec: dict, default_type: str, rolling: dict, key: str = "strategy") -> None:
    strategy = spec.get(key)
    if not isinstance(strategy, dict):
        strategy = spec[key] = {}
    _set(strategy, "type", default_type)
    if strategy["type"] == "RollingUpdate":
        got = strategy.get("rollingUpdate")
        if not isinstance(got, dict):
            got = strategy["rollingUpdate"] = {}
        for k, v in rolling.items():
            if got.get(k) is None:
                got[k] = v


def _replicas(spec: dict) -> None:
    if spec.get("replicas") is None:
        spec["replicas"] = 1


def _history(spec: dict, limit: int = 10) -> None:
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = limit


def deployment(spec: dict) -> None:
    _replicas(spec)
    _rolling(spec, "RollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
    _history(spec)
    if spec.get("progressDeadlineSeconds") is None:
        spec["progressDeadlineSeconds"] = 600
    template(spec)


def statefulset(spec: dict) -> None:
    _replicas(spec)
    _set(spec, "podManagementPolicy", "OrderedReady")
    strategy = spec.get("updateStrategy")
    if not isinstance(strategy, dict):
        strategy = spec["updateStrategy"] = {}
    if not strategy.get("type"):
        # as upstream: a rollingUpdate is added only along with the type it defaults
        strategy["type"] = "RollingUpdate"
        strategy.setdefault("rollingUpdate", {})
    if strategy["type"] == "RollingUpdate" and isinstance(strategy.get("rollingUpdate"), dict):
        strategy["rollingUpdate"].setdefault("partition", 0)
    _history(spec)
    retention = spec.get("persistentVolumeClaimRetentionPolicy")
    if not isinstance(retention, dict):
        retention = spec["persistentVolumeClaimRetentionPolicy"] = {}
    _set(retention, "whenDeleted", "Retain")
    _set(retention, "whenScaled", "Retain")
    template(spec)


def daemonset(spec: dict) -> None:
    _rolling(spec, "RollingUpdate", {"maxUnavailable": 1, "maxSurge": 0}, key="updateStrategy")
    _history(spec)
    template(spec)


def job(obj: dict, spec: dict) -> None:
    """SetDefaults_Job: a Job with neither completions nor parallelism runs one pod once."""
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
    _set(spec, "completionMode", "NonIndexed")
    if spec.get("suspend") is None:
        spec["suspend"] = False
    _set(spec, "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    meta = obj.setdefault("metadata", {})
    if labels and not meta.get("labels"):
        meta["labels"] = dict(labels)
    template(spec)


def cronjob(spec: dict) -> None:
    _set(spec, "concurrencyPolicy", "Allow")
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("successfulJobsHistoryLimit") is None:
        spec["successfulJobsHistoryLimit"] = 3
    if spec.get("failedJobsHistoryLimit") is None:
        spec["failedJobsHistoryLimit"] = 1
    job_template = spec.get("jobTemplate")
    if isinstance(job_template, dict) and isinstance(job_template.get("spec"), dict):
        template(job_template["spec"])


def namespace(obj: dict) -> None:
    """A Namespace's finalizer (added by the registry upstream) and phase."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    if spec.get("finalizers") is None:
        spec["finalizers"] = ["kubernetes"]
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    _set(status, "phase", "Active")


def volume_claim(obj: dict, spec: dict) -> None:
    """A PersistentVolume's or PersistentVolumeClaim's volumeMode, phase, and a volume's
    reclaim policy."""
    _set(spec, "volumeMode", "Filesystem")
    if obj["kind"] == "PersistentVolume":
        _set(spec, "persistentVolumeReclaimPolicy", "Retain")
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    _set(status, "phase", "Pending")


def ingress_class(spec: dict) -> None:
    """networking/v1 SetDefaults_IngressClass: parameters without a scope are cluster-scoped."""
    params = spec.get("parameters")
    if isinstance(params, dict) and params.get("scope") is None:
        params["scope"] = "Cluster"


def _spec(obj: dict) -> dict | None:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else None


def apply_defaults(obj: dict) -> dict:
    """``obj`` (a built-in kind's document) with upstream's defaults filled in, in place."""
    kind, spec = obj.get("kind"), _spec(obj)
    if str(obj.get("apiVersion", "")).startswith(gatewayapi.GROUP + "/"):
        return gatewayapi.defaults(obj)
    if kind == "Pod":
        pod(obj)
    elif kind == "PodTemplate":
        template(obj)
    elif kind == "Namespace":
        namespace(obj)
    elif kind == "Secret":
        _set(obj, "type", "Opaque")
    elif spec is None:
        return obj
    elif kind == "Service":
        service(spec)
    elif kind == "Deployment":
        deployment(spec)
    elif kind in ("ReplicaSet", "ReplicationController"):
        _replicas(spec)
        template(spec)
    elif kind == "StatefulSet":
        statefulset(spec)
    elif kind == "DaemonSet":
        daemonset(spec)
    elif kind == "Job":
        job(obj, spec)
    elif kind == "CronJob":
        cronjob(spec)
    elif kind in ("PersistentVolume", "PersistentVolumeClaim"):
        volume_claim(obj, spec)
    elif kind == "IngressClass":
        ingress_class(spec)
    return obj
