"""Just enough of an API server for kubectl and the Python client to reach the streaming
handlers (netsim.apiserver.streams) of a real cluster: discovery of v1 pods and their
subresources, GET of a pod from the cluster's store, and the exec, attach, portforward and
log routes, over plain HTTP on loopback.  The real server (netsim.apiserver.app) routes to
the same handlers; this stub lets the handlers be tested against real clients on their own."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aiohttp import web

from netsim.api.store import NotFound, open_store
from netsim.apiserver import streams
from netsim.model import k8s, state

RESOURCES = [
    {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "shortNames": ["po"],
     "verbs": ["get", "list"]},
    {"name": "pods/attach", "singularName": "", "namespaced": True, "kind": "PodAttachOptions",
     "verbs": ["create", "get"]},
    {"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions",
     "verbs": ["create", "get"]},
    {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
    {"name": "pods/portforward", "singularName": "", "namespaced": True, "kind": "PodPortForwardOptions",
     "verbs": ["create", "get"]},
]


class Stub:
    """The stub server for ``cluster`` on a free loopback port, in a thread of its own."""

    def __init__(self, cluster: str):
        self.cluster = cluster
        st = state.read_state(cluster)
        self.store = open_store(st.store)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/api", self.api)
        app.router.add_get("/apis", self.apis)
        app.router.add_get("/api/v1", self.core)
        base = "/api/v1/namespaces/{ns}/pods/{name}"
        app.router.add_get(base, self.pod)
        for sub, handler in (("exec", streams.exec_pod), ("attach", streams.attach),
                             ("portforward", streams.port_forward), ("log", streams.pod_log)):
            app.router.add_route("*", f"{base}/{sub}", self.sub(handler))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return runner

    async def api(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]})

    async def apis(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def core(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIResourceList", "groupVersion": "v1", "resources": RESOURCES})

    def _get(self, request: web.Request) -> dict | None:
        try:
            return self.store.get(k8s.key("Pod", request.match_info["ns"], request.match_info["name"]))
        except NotFound:
            return None

    async def pod(self, request: web.Request) -> web.Response:
        pod = self._get(request)
        if pod is None:
            return streams.error_response(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        return web.json_response(pod)

    def sub(self, handler):
        async def route(request: web.Request) -> web.StreamResponse:
            pod = self._get(request)
            if pod is None:
                return streams.error_response(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
            return await handler(request, pod, self.cluster)
        return route

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: stub
  cluster: {{server: "{self.url}"}}
users:
- name: stub
  user: {{}}
contexts:
- name: stub
  context: {{cluster: stub, user: stub, namespace: default}}
current-context: stub
""")
        return path

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.store.close()
