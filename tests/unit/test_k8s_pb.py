"""k8s_pb: objects encoded with the module's own message classes the way client-go writes them
(every non-pointer scalar on the wire, zero or not; the "k8s\\0" runtime.Unknown envelope) decode
to the JSON Go's encoding/json would write; what cannot be decoded is Unsupported, and the API
server answers it with a 415 Status (conftest's loopback apiserver, urllib as the client)."""

import base64
import json
import random
import urllib.error
import urllib.request

import pytest

from netsim.apiserver import k8s_pb

M = k8s_pb.MESSAGES


def _wire(api_version: str, kind: str, obj) -> bytes:
    u = k8s_pb.Unknown(raw=obj.SerializeToString(), contentEncoding="", contentType="")
    u.typeMeta.apiVersion, u.typeMeta.kind = api_version, kind
    return k8s_pb.MAGIC + u.SerializeToString()


def _meta(**kw):
    # Go writes the non-pointer strings even when empty and the zero creationTimestamp as an
    # empty message; both must come out as encoding/json writes them (left out, null).
    m = M["meta.ObjectMeta"](**{"generateName": "", "namespace": "", "selfLink": "", "uid": "",
                                "resourceVersion": "", "generation": 0, **kw})
    m.creationTimestamp.SetInParent()
    return m


def test_deployment_decodes_to_the_json_go_writes():
    d = M["apps.Deployment"](metadata=_meta(name="web", labels={"app": "web"}))
    spec = d.spec
    spec.replicas = 0  # a *int32: its zero stays
    spec.minReadySeconds = 0  # an omitempty int32: its zero goes
    spec.paused = False
    spec.selector.matchLabels["app"] = "web"
    spec.strategy.SetInParent()  # a non-pointer struct: written as {}
    spec.strategy.type = ""
    t = spec.template
    t.metadata.CopyFrom(_meta(labels={"app": "web"}))
    c = t.spec.containers.add(name="nginx", image="nginx:1.27", imagePullPolicy="", workingDir="")
    c.ports.add(containerPort=80, name="", protocol="TCP", hostPort=0)
    c.resources.limits["memory"].string = "128Mi"
    c.resources.requests["cpu"].string = "100m"
    c.env.add(name="A", value="")
    c.env.add(name="POD", valueFrom=M["core.EnvVarSource"](fieldRef=M["core.ObjectFieldSelector"](
        fieldPath="metadata.name")))
    c.readinessProbe.handler.httpGet.path = "/healthz"
    c.readinessProbe.handler.httpGet.port.CopyFrom(M["intstr.IntOrString"](type=1, intVal=0, strVal="http"))
    c.readinessProbe.periodSeconds = 5
    t.spec.volumes.add(name="cfg").volumeSource.configMap.localObjectReference.name = "c"
    t.spec.terminationGracePeriodSeconds = 0
    d.status.SetInParent()
    assert k8s_pb.decode(_wire("apps/v1", "Deployment", d)) == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}, "creationTimestamp": None},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "strategy": {},
                 "template": {
                     "metadata": {"labels": {"app": "web"}, "creationTimestamp": None},
                     "spec": {"containers": [{
                         "name": "nginx", "image": "nginx:1.27",
                         "ports": [{"containerPort": 80, "protocol": "TCP"}],
                         "env": [{"name": "A"}, {"name": "POD", "valueFrom": {"fieldRef": {
                             "fieldPath": "metadata.name"}}}],
                         "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}},
                         # ProbeHandler is embedded in Probe: its fields are the probe's
                         "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5}}],
                         # VolumeSource and LocalObjectReference are embedded too
                         "volumes": [{"name": "cfg", "configMap": {"name": "c"}}],
                         "terminationGracePeriodSeconds": 0}}},
        "status": {}}


def test_service_ports_int_or_string_and_time():
    s = M["core.Service"](metadata=_meta(name="web"))
    s.metadata.creationTimestamp.seconds = 1700000000
    s.metadata.creationTimestamp.nanos = 5  # metav1.Time keeps seconds only
    p = s.spec.ports.add(name="", protocol="TCP", port=80, nodePort=0)
    p.targetPort.CopyFrom(M["intstr.IntOrString"](type=0, intVal=8080, strVal=""))
    s.spec.selector["app"] = "web"
    s.spec.type = "ClusterIP"
    s.spec.clusterIP = ""
    doc = k8s_pb.decode(_wire("v1", "Service", s))
    assert doc["metadata"]["creationTimestamp"] == "2023-11-14T22:13:20Z"
    assert doc["spec"] == {"ports": [{"protocol": "TCP", "port": 80, "targetPort": 8080}],
                           "selector": {"app": "web"}, "type": "ClusterIP"}


def test_secret_bytes_are_base64_and_pointer_bools_keep_false():
    s = M["core.Secret"](metadata=_meta(name="s"), type="Opaque", immutable=False)
    s.data["a"] = b"b"
    s.data["bin"] = b"\x00\xff"
    s.stringData["x"] = "y"
    assert k8s_pb.decode(_wire("v1", "Secret", s)) == {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "creationTimestamp": None},
        "immutable": False, "data": {"a": "Yg==", "bin": base64.b64encode(b"\x00\xff").decode()},
        "stringData": {"x": "y"}, "type": "Opaque"}


def test_rbac_ingress_pdb_and_managed_fields():
    r = M["rbac.RoleBinding"](metadata=_meta(name="rb"))
    r.subjects.add(kind="User", name="u", apiGroup="rbac.authorization.k8s.io", namespace="")
    r.roleRef.CopyFrom(M["rbac.RoleRef"](apiGroup="rbac.authorization.k8s.io", kind="Role", name="r"))
    mf = r.metadata.managedFields.add(manager="kubectl", operation="Update", apiVersion="rbac.authorization.k8s.io/v1",
                                      fieldsType="FieldsV1")
    mf.fieldsV1.Raw = b'{"f:roleRef":{}}'
    doc = k8s_pb.decode(_wire("rbac.authorization.k8s.io/v1", "RoleBinding", r))
    assert doc["subjects"] == [{"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"}]
    assert doc["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}
    assert doc["metadata"]["managedFields"] == [{"manager": "kubectl", "operation": "Update",
                                                 "apiVersion": "rbac.authorization.k8s.io/v1",
                                                 "fieldsType": "FieldsV1", "fieldsV1": {"f:roleRef": {}}}]

    ing = M["networking.Ingress"](metadata=_meta(name="i"))
    rule = ing.spec.rules.add(host="a.example")
    path = rule.ingressRuleValue.http.paths.add(path="/", pathType="Prefix")
    path.backend.service.name = "web"
    path.backend.service.port.number = 80
    assert k8s_pb.decode(_wire("networking.k8s.io/v1", "Ingress", ing))["spec"] == {"rules": [{
        "host": "a.example",
        "http": {"paths": [{"path": "/", "pathType": "Prefix",
                            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}

    pdb = M["policy.PodDisruptionBudget"](metadata=_meta(name="p"))
    pdb.spec.maxUnavailable.CopyFrom(M["intstr.IntOrString"](type=1, strVal="25%"))
    assert k8s_pb.decode(_wire("policy/v1", "PodDisruptionBudget", pdb))["spec"] == {"maxUnavailable": "25%"}


def test_what_cannot_be_decoded_is_unsupported_naming_the_kind():
    with pytest.raises(k8s_pb.Unsupported, match="Widget"):
        k8s_pb.decode(_wire("example.com/v1", "Widget", M["core.Namespace"]()))
    with pytest.raises(k8s_pb.Unsupported, match="magic"):
        k8s_pb.decode(b'{"kind": "Namespace"}')
    with pytest.raises(k8s_pb.Unsupported) as e:
        k8s_pb.decode(k8s_pb.MAGIC + b"\x0a\xff\xff")
    assert "runtime.Unknown" in str(e.value)
    bad = k8s_pb.Unknown(raw=b"\x0a\x05\x0a\x01", contentEncoding="")
    bad.typeMeta.apiVersion, bad.typeMeta.kind = "v1", "Namespace"
    with pytest.raises(k8s_pb.Unsupported, match="Namespace"):
        k8s_pb.decode(k8s_pb.MAGIC + bad.SerializeToString())
    # a field this schema lacks is refused, not dropped (field 99 of ObjectMeta)
    ns = M["core.Namespace"](metadata=_meta(name="n"))
    extra = b"\x9a\x06\x01x"  # field 99, length-delimited, "x"
    inner = ns.metadata.SerializeToString() + extra
    raw = b"\x0a" + bytes([len(inner)]) + inner
    u = k8s_pb.Unknown(raw=raw)
    u.typeMeta.apiVersion, u.typeMeta.kind = "v1", "Namespace"
    with pytest.raises(k8s_pb.Unsupported, match=r"metadata has fields netsim does not know \(numbers \[99\]\)"):
        k8s_pb.decode(k8s_pb.MAGIC + u.SerializeToString())


def _post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": k8s_pb.CONTENT_TYPE, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_api_server_stores_protobuf_and_answers_415_for_what_it_cannot_read(apiserver):
    code, doc = _post(f"{apiserver}/api/v1/namespaces", _wire("v1", "Namespace", M["core.Namespace"](
        metadata=_meta(name="pb"))))
    assert code == 201, doc
    assert doc["metadata"]["name"] == "pb" and doc["kind"] == "Namespace"
    code, doc = _post(f"{apiserver}/api/v1/namespaces/pb/configmaps", _wire("v1", "ConfigMap", M["core.ConfigMap"](
        metadata=_meta(name="c"), data={"k": "v"})))
    assert (code, doc["data"]) == (201, {"k": "v"})
    code, doc = _post(f"{apiserver}/api/v1/namespaces/pb/configmaps",
                      _wire("v1", "ComponentStatus", M["core.Namespace"](metadata=_meta(name="x"))))
    assert code == 415, doc
    assert doc["kind"] == "Status" and doc["reason"] == "UnsupportedMediaType"
    assert "ComponentStatus" in doc["message"] and "JSON" in doc["message"]
    assert doc["details"] == {"kind": "ComponentStatus"}
    code, doc = _post(f"{apiserver}/api/v1/namespaces/pb/configmaps", b"not protobuf")
    assert (code, doc["reason"]) == (415, "UnsupportedMediaType")


def test_controller_kinds_micro_time_delete_options_and_csr():
    lease = M["coordination.Lease"](metadata=_meta(name="l", namespace="kube-node-lease"))
    lease.spec.holderIdentity = "n1"
    lease.spec.leaseDurationSeconds = 40
    lease.spec.renewTime.seconds, lease.spec.renewTime.nanos = 1700000000, 123456789
    lease.spec.acquireTime.SetInParent()  # Go's zero MicroTime
    assert k8s_pb.decode(_wire("coordination.k8s.io/v1", "Lease", lease))["spec"] == {
        "holderIdentity": "n1", "leaseDurationSeconds": 40, "acquireTime": None,
        "renewTime": "2023-11-14T22:13:20.123456Z"}

    es = M["discovery.EndpointSlice"](metadata=_meta(name="web-1"), addressType="IPv4")
    ep = es.endpoints.add(addresses=["10.0.0.5"])
    ep.conditions.ready = False  # a *bool: false is said, not left out
    es.ports.add(name="", port=8080, protocol="TCP")
    doc = k8s_pb.decode(_wire("discovery.k8s.io/v1", "EndpointSlice", es))
    assert doc["endpoints"] == [{"addresses": ["10.0.0.5"], "conditions": {"ready": False}}]
    assert doc["ports"] == [{"name": "", "port": 8080, "protocol": "TCP"}]  # *string name: "" stays

    opts = M["meta.DeleteOptions"](gracePeriodSeconds=0, propagationPolicy="Foreground")
    assert k8s_pb.decode(_wire("v1", "DeleteOptions", opts)) == {
        "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "propagationPolicy": "Foreground"}

    csr = M["certificates.CertificateSigningRequest"](metadata=_meta(name="x"))
    csr.spec.request = b"-----BEGIN CERTIFICATE REQUEST-----\n"
    csr.spec.signerName = "kubernetes.io/kube-apiserver-client"
    csr.spec.usages.append("client auth")
    csr.spec.extra["scopes"].items.extend(["a", "b"])
    cond = csr.status.conditions.add(type="Approved", status="True", reason="KubectlApprove")
    cond.lastUpdateTime.seconds = 1700000000
    doc = k8s_pb.decode(_wire("certificates.k8s.io/v1", "CertificateSigningRequest", csr))
    assert doc["spec"] == {"request": base64.b64encode(b"-----BEGIN CERTIFICATE REQUEST-----\n").decode(),
                           "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"],
                           "extra": {"scopes": ["a", "b"]}}
    assert doc["status"]["conditions"] == [{"type": "Approved", "status": "True", "reason": "KubectlApprove",
                                            "lastUpdateTime": "2023-11-14T22:13:20Z"}]


def test_broken_bodies_are_unsupported_never_another_error():
    d = M["apps.Deployment"](metadata=_meta(name="web", labels={"app": "web"}))
    d.spec.replicas = 2
    c = d.spec.template.spec.containers.add(name="c", image="nginx")
    c.resources.limits["memory"].string = "1Gi"
    c.ports.add(containerPort=80)
    raw = d.SerializeToString()
    rng = random.Random(7)
    outcomes = set()
    for _ in range(3000):  # byte flips, cuts and insertions in the object
        b = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(b))
            op = rng.random()
            if op < 0.5:
                b[pos] = rng.randrange(256)
            elif op < 0.75:
                del b[pos]
            else:
                b.insert(pos, rng.randrange(256))
        u = k8s_pb.Unknown(raw=bytes(b))
        u.typeMeta.apiVersion, u.typeMeta.kind = "apps/v1", "Deployment"
        try:
            outcomes.add(type(k8s_pb.decode(k8s_pb.MAGIC + u.SerializeToString())).__name__)
        except k8s_pb.Unsupported:
            outcomes.add("Unsupported")
    assert outcomes == {"dict", "Unsupported"}

    ns = M["core.Namespace"](metadata=_meta(name="n"))
    ns.metadata.creationTimestamp.seconds = 2**62
    with pytest.raises(k8s_pb.Unsupported, match="out of range"):
        k8s_pb.decode(_wire("v1", "Namespace", ns))
    # a name that is not UTF-8: Go's JSON writes U+FFFD for the bad byte
    meta = _meta(name="n").SerializeToString().replace(b"\x0a\x01n", b"\x0a\x02n\xff")
    u = k8s_pb.Unknown(raw=b"\x0a" + bytes([len(meta)]) + meta)  # Namespace{metadata: 1}
    u.typeMeta.apiVersion, u.typeMeta.kind = "v1", "Namespace"
    assert k8s_pb.decode(k8s_pb.MAGIC + u.SerializeToString())["metadata"]["name"] == "n\ufffd"


def test_raw_extension_and_storage_kinds():
    cr = M["apps.ControllerRevision"](metadata=_meta(name="web-1"), revision=1)
    cr.data.raw = b'{"spec":{"template":{"spec":{"containers":[{"name":"c"}]}}}}'
    assert k8s_pb.decode(_wire("apps/v1", "ControllerRevision", cr))["data"] == {
        "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}
    cr.data.raw = b"\x00not json"
    with pytest.raises(k8s_pb.Unsupported, match="ControllerRevision.*RawExtension"):
        k8s_pb.decode(_wire("apps/v1", "ControllerRevision", cr))
    sc = M["storage.StorageClass"](metadata=_meta(name="fast"), provisioner="example.com/disk",
                                   parameters={"type": "ssd"}, reclaimPolicy="Delete",
                                   allowVolumeExpansion=False)
    assert k8s_pb.decode(_wire("storage.k8s.io/v1", "StorageClass", sc)) == {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "fast", "creationTimestamp": None}, "provisioner": "example.com/disk",
        "parameters": {"type": "ssd"}, "reclaimPolicy": "Delete", "allowVolumeExpansion": False}
