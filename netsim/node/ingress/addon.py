"""The ingress-nginx add-on (scenario ``addons: [ingress-nginx]``): the objects upstream's
deploy/static/provider/cloud/deploy.yaml brings that netsim acts on, and nothing else.

A namespace ``ingress-nginx``; the controller Deployment (its image is what makes the agent
run nginx in its pods, netsim.node.ingress.controller; its args parameterise what it serves);
Service ``ingress-nginx-controller`` of type LoadBalancer with externalTrafficPolicy Local;
IngressClass ``nginx`` (controller k8s.io/ingress-nginx), the default class.  Pure data.
"""

from __future__ import annotations

NAMESPACE = "ingress-nginx"
SERVICE = "ingress-nginx-controller"
IMAGE = "registry.k8s.io/ingress-nginx/controller:v1.12.1"
CLASS = "nginx"
CONTROLLER_CLASS = "k8s.io/ingress-nginx"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"


def addon_objects(replicas: int = 1) -> list[dict]:
    labels = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/instance": "ingress-nginx",
              "app.kubernetes.io/component": "controller"}
    meta = {"namespace": NAMESPACE, "labels": labels}
    args = ["/nginx-ingress-controller", f"--publish-service=$(POD_NAMESPACE)/{SERVICE}",
            "--election-id=ingress-nginx-leader", f"--controller-class={CONTROLLER_CLASS}",
            f"--ingress-class={CLASS}", f"--configmap=$(POD_NAMESPACE)/{SERVICE}"]
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    ports = [{"name": "http", "containerPort": 80, "protocol": "TCP"},
             {"name": "https", "containerPort": 443, "protocol": "TCP"}]
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/name": "ingress-nginx",
                                                    "app.kubernetes.io/instance": "ingress-nginx"}}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": SERVICE, **meta},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"containers": [{"name": "controller", "image": IMAGE, "args": args,
                                                        "env": env, "ports": ports}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": SERVICE, **meta},
         "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": labels,
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http",
                             "appProtocol": "http"},
                            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https",
                             "appProtocol": "https"}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": CLASS, "labels": labels, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
         "spec": {"controller": CONTROLLER_CLASS}},
    ]


def objects(addons: list[str]) -> list[dict]:
    """The objects of a scenario's add-ons this module knows ("gateway" is the Gateway API's)."""
    return addon_objects() if "ingress-nginx" in addons else []
