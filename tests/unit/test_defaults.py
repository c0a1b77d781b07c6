"""kube-apiserver's API defaults (netsim.api.defaults), as every writer gets them through the
registry (create, apply, replace; the controllers' cache writes through new_object) on the
in-memory store: each default filled in when left out, a value the writer set kept, defaulting
twice a no-op, and the Deployment controller hashing the defaulted template.  Then the real
kubectl through the loopback API server: `describe` shows the strategy and the ports' protocol."""

from __future__ import annotations

import copy

import pytest

from netsim.api import defaults, registry
from netsim.api.informer import Cache
from netsim.controllers import manager
from netsim.model import k8s
from tests.unit.fakes import MemoryStore


@pytest.fixture
def store():
    s = MemoryStore()
    registry.bootstrap(s, registry.ClusterConfig(service_subnet="10.96.0.0/28"))
    return s


def container(**extra):
    return {"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 8080}], **extra}


def pod(**spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [container()], **spec}}


def workload(kind, api="apps/v1", **spec):
    template = {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [container()]}}
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "w", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "w"}}, "template": template, **spec}}


def created(store, obj):
    return registry.create(store, obj)


def applied(store, obj):
    registry.apply(store, [obj])
    return store.get(k8s.key_of(obj))


WRITERS = [created, applied]


# -- pods and pod templates ----------------------------------------------------------------------

@pytest.mark.parametrize("write", WRITERS)
def test_pod_spec_defaults(store, write):
    spec = write(store, pod())["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    c = spec["containers"][0]
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]


def test_pod_spec_keeps_what_the_writer_set(store):
    set_spec = {"restartPolicy": "Never", "dnsPolicy": "Default", "schedulerName": "mine",
                "terminationGracePeriodSeconds": 0, "securityContext": {"runAsUser": 1000},
                "enableServiceLinks": False,
                "containers": [container(imagePullPolicy="Never", terminationMessagePath="/tmp/t",
                                         terminationMessagePolicy="FallbackToLogsOnError",
                                         ports=[{"containerPort": 53, "protocol": "UDP"}])]}
    spec = created(store, pod(**set_spec))["spec"]
    assert spec == set_spec


@pytest.mark.parametrize(("image", "policy"), [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("registry:5000/team/app", "Always"),
    ("registry:5000/team/app:v2", "IfNotPresent"), ("nginx:1.25", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent")])
def test_image_pull_policy_follows_the_tag(image, policy):
    obj = pod(containers=[{"name": "c", "image": image}])
    assert defaults.apply_defaults(obj)["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_probes_handlers_env_and_volumes():
    probe = {"httpGet": {"port": 8080}}
    c = container(livenessProbe=copy.deepcopy(probe), readinessProbe={"tcpSocket": {"port": 1}, "periodSeconds": 5},
                  lifecycle={"preStop": {"httpGet": {"port": 1, "path": "/stop"}}},
                  env=[{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}])
    volumes = [{"name": "scratch"}, {"name": "s", "secret": {"secretName": "s"}},
               {"name": "cm", "configMap": {"name": "cm", "defaultMode": 256}},
               {"name": "h", "hostPath": {"path": "/x"}}]
    spec = defaults.apply_defaults(pod(containers=[c], volumes=volumes))["spec"]
    c = spec["containers"][0]
    assert c["livenessProbe"] == {"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                                  "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    assert c["readinessProbe"]["periodSeconds"] == 5  # set: kept
    assert c["lifecycle"]["preStop"]["httpGet"] == {"port": 1, "path": "/stop", "scheme": "HTTP"}
    assert c["env"][0]["valueFrom"]["fieldRef"] == {"fieldPath": "spec.nodeName", "apiVersion": "v1"}
    assert spec["volumes"] == [{"name": "scratch", "emptyDir": {}},
                               {"name": "s", "secret": {"secretName": "s", "defaultMode": 420}},
                               {"name": "cm", "configMap": {"name": "cm", "defaultMode": 256}},
                               {"name": "h", "hostPath": {"path": "/x", "type": ""}}]


def test_pod_only_defaults_are_not_a_templates():
    limits = {"cpu": "1"}
    obj = pod(hostNetwork=True, containers=[container(resources={"limits": limits})])
    spec = defaults.apply_defaults(obj)["spec"]
    assert spec["containers"][0]["resources"]["requests"] == limits
    assert spec["containers"][0]["ports"][0]["hostPort"] == 8080
    tmpl = defaults.apply_defaults(workload("Deployment"))["spec"]["template"]["spec"]
    assert "enableServiceLinks" not in tmpl and tmpl["restartPolicy"] == "Always"


def test_defaulting_twice_changes_nothing():
    for obj in (pod(), workload("Deployment"), workload("StatefulSet"), workload("DaemonSet"),
                workload("Job", "batch/v1")):
        once = defaults.apply_defaults(copy.deepcopy(obj))
        assert defaults.apply_defaults(copy.deepcopy(once)) == once


def test_a_pod_applied_again_without_its_defaults_is_unchanged(store):
    registry.apply(store, [pod()])
    assert registry.apply(store, [pod()]) == [("pod/default/p", "unchanged")]
    # a stored pod from before a default existed updates without a spec change being claimed
    key = k8s.key("Pod", "default", "p")
    bare = store.get(key)
    bare["spec"] = pod()["spec"]
    store.update(key, bare, int(bare["metadata"]["resourceVersion"]))
    registry.apply(store, [pod(terminationGracePeriodSeconds=5)])
    assert store.get(key)["spec"]["terminationGracePeriodSeconds"] == 5


# -- workloads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("write", WRITERS)
def test_deployment_defaults(store, write):
    spec = write(store, workload("Deployment"))["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["template"]["spec"]["dnsPolicy"] == "ClusterFirst"


def test_deployment_keeps_what_the_writer_set(store):
    spec = created(store, workload("Deployment", replicas=0, strategy={"type": "Recreate"}, revisionHistoryLimit=2,
                                   progressDeadlineSeconds=60))["spec"]
    assert (spec["replicas"], spec["strategy"], spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == \
        (0, {"type": "Recreate"}, 2, 60)
    spec = created(store, {**workload("Deployment", strategy={"rollingUpdate": {"maxSurge": 1}}),
                           "metadata": {"name": "w2", "namespace": "default"}})["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}


def test_replicaset_statefulset_daemonset_defaults():
    rs = defaults.apply_defaults(workload("ReplicaSet"))["spec"]
    assert rs["replicas"] == 1 and rs["template"]["spec"]["schedulerName"] == "default-scheduler"
    sts = defaults.apply_defaults(workload("StatefulSet"))["spec"]
    assert sts["replicas"] == 1 and sts["podManagementPolicy"] == "OrderedReady"
    assert sts["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert sts["revisionHistoryLimit"] == 10
    assert sts["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    ds = defaults.apply_defaults(workload("DaemonSet"))["spec"]
    assert ds["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert ds["revisionHistoryLimit"] == 10 and "replicas" not in ds
    typed = defaults.apply_defaults(workload("StatefulSet", updateStrategy={"type": "RollingUpdate"}))["spec"]
    assert typed["updateStrategy"] == {"type": "RollingUpdate"}  # upstream adds no rollingUpdate to a set type
    kept = defaults.apply_defaults(workload("StatefulSet", replicas=3, podManagementPolicy="Parallel",
                                            updateStrategy={"type": "OnDelete"}))["spec"]
    assert (kept["replicas"], kept["podManagementPolicy"], kept["updateStrategy"]) == \
        (3, "Parallel", {"type": "OnDelete"})


def test_job_and_cronjob_defaults():
    job = defaults.apply_defaults(workload("Job", "batch/v1"))
    spec = job["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (1, 1, 6)
    assert (spec["completionMode"], spec["suspend"], spec["podReplacementPolicy"]) == \
        ("NonIndexed", False, "TerminatingOrFailed")
    assert job["metadata"]["labels"] == {"app": "w"}  # the template's, when the Job has none
    kept = defaults.apply_defaults(workload("Job", "batch/v1", parallelism=4, backoffLimit=0))["spec"]
    assert (kept["parallelism"], kept["backoffLimit"]) == (4, 0) and "completions" not in kept
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "default"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [container()]}}}}}}
    spec = defaults.apply_defaults(cron)["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"], spec["successfulJobsHistoryLimit"],
            spec["failedJobsHistoryLimit"]) == ("Allow", False, 3, 1)
    tmpl = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert tmpl["restartPolicy"] == "OnFailure" and tmpl["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_deployment_controller_hashes_the_defaulted_template(store):
    """The ReplicaSet's name carries the hash of the template as stored, defaults included, so
    a controller restarted on the same store, or a write of the same document, finds it again."""
    registry.apply(store, [workload("Deployment")])
    cache = Cache(store)
    cache.relist()
    stored = store.get(k8s.key("Deployment", "default", "w"))
    want = f"w-{k8s.template_hash(stored['spec']['template'])}"
    assert stored["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert want != f"w-{k8s.template_hash(workload('Deployment')['spec']['template'])}"
    manager.deployments(cache)
    rs = store.get(k8s.key("ReplicaSet", "default", want))
    assert rs["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    registry.apply(store, [workload("Deployment")])  # the same document again: same template, no new hash
    cache.relist()
    manager.deployments(cache)
    assert [o["metadata"]["name"] for o in store.list(k8s.prefix("ReplicaSet", "default"))[0]] == [want]


# -- services, secrets, namespaces ------------------------------------------------------------------

def service(**spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "default"},
            "spec": {"selector": {"app": "s"}, **spec}}


@pytest.mark.parametrize("write", WRITERS)
def test_service_defaults(store, write):
    spec = write(store, service(ports=[{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": 0},
                                       {"port": 8080, "targetPort": "http"}]))["spec"]
    assert spec["type"] == "ClusterIP" and spec["sessionAffinity"] == "None"
    assert spec["internalTrafficPolicy"] == "Cluster" and "externalTrafficPolicy" not in spec
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80},
                             {"port": 53, "protocol": "UDP", "targetPort": 53},
                             {"port": 8080, "protocol": "TCP", "targetPort": "http"}]


def test_nodeport_and_loadbalancer_service_defaults(store):
    spec = created(store, service(type="NodePort", ports=[{"port": 80}]))["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster" and "allocateLoadBalancerNodePorts" not in spec
    lb = defaults.apply_defaults(service(type="LoadBalancer", externalTrafficPolicy="Local",
                                         sessionAffinity="ClientIP", ports=[{"port": 80}]))["spec"]
    assert lb["externalTrafficPolicy"] == "Local" and lb["allocateLoadBalancerNodePorts"] is True
    assert lb["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    ext = created(store, {**service(type="ExternalName", externalName="example.org"),
                          "metadata": {"name": "e", "namespace": "default"}})["spec"]
    assert "internalTrafficPolicy" not in ext and "ipFamilies" not in ext and "clusterIP" not in ext


def test_secret_and_namespace_defaults(store):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}}
    assert created(store, secret)["type"] == "Opaque"
    tls = {**secret, "metadata": {"name": "t", "namespace": "default"}, "type": "kubernetes.io/tls",
           "data": {"tls.crt": "", "tls.key": ""}}  # a TLS Secret without both keys is refused
    assert created(store, tls)["type"] == "kubernetes.io/tls"
    ns = created(store, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    assert ns["spec"] == {"finalizers": ["kubernetes"]} and ns["status"] == {"phase": "Active"}
    assert store.get(k8s.key("Namespace", None, "default"))["spec"]["finalizers"] == ["kubernetes"]


def test_volume_defaults():
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c", "namespace": "default"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    got = defaults.apply_defaults(copy.deepcopy(claim))
    assert got["spec"]["volumeMode"] == "Filesystem" and got["status"] == {"phase": "Pending"}
    volume = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "v"},
              "spec": {"volumeMode": "Block", "hostPath": {"path": "/x"}}}
    got = defaults.apply_defaults(volume)["spec"]
    assert got["volumeMode"] == "Block" and got["persistentVolumeReclaimPolicy"] == "Retain"


def test_custom_resources_get_no_builtin_defaults():
    obj = {"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}}
    assert registry.defaulted(copy.deepcopy(obj)) == obj


# -- the real kubectl -------------------------------------------------------------------------------

def test_kubectl_describe_shows_the_defaults(kubectl):
    code, _, err = kubectl("create", "-f", "-", stdin=workload("Deployment"))
    assert code == 0, err
    code, out, err = kubectl("describe", "deployment", "w")
    assert code == 0, err
    shown = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in out.splitlines() if ":" in line}
    assert shown["StrategyType"] == "RollingUpdate", out
    assert shown["RollingUpdateStrategy"] == "25% max unavailable, 25% max surge", out
    assert shown["Port"] == "8080/TCP", out
    code, _, err = kubectl("create", "-f", "-", stdin=service(ports=[{"port": 80}]))
    assert code == 0, err
    code, out, err = kubectl("describe", "service", "s")
    assert code == 0, err
    shown = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out.splitlines() if ":" in line}
    assert (shown["Port"], shown["TargetPort"], shown["Session Affinity"]) == ("<unset>  80/TCP", "80/TCP", "None"), out
    assert (shown["IP Families"], shown["Internal Traffic Policy"]) == ("IPv4", "Cluster"), out


def test_kubectl_apply_again_is_unchanged_and_keeps_the_generation(kubectl):
    """The defaults the server added are no change: applying the same document again (a
    three-way patch against the defaulted live object) leaves it unchanged."""
    code, out, err = kubectl("apply", "-f", "-", stdin=workload("Deployment"))
    assert code == 0 and "created" in out, (out, err)
    code, out, err = kubectl("apply", "-f", "-", stdin=workload("Deployment"))
    assert code == 0 and "unchanged" in out, (out, err)
    code, out, err = kubectl("get", "deployment", "w", "-o", "jsonpath={.metadata.generation} {.spec.replicas}")
    assert (code, out) == (0, "1 1"), err
