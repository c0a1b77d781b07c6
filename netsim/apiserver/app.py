"""The API server's HTTP side (aiohttp): client-certificate authentication, routing of the
Kubernetes paths to discovery, the REST verbs (netsim.apiserver.resources, run in a thread pool
since the store is synchronous; a GET of one object from a local SQLite store on the loop),
watches, Table output, OpenAPI and the pod streams.  Every error is a Status object; no
traceback reaches a client.
May import: the standard library, aiohttp, netsim.api, netsim.model and netsim.apiserver."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from netsim.api import admission, crds, registry
from netsim.api.store import Event, Store
from netsim.apiserver import discovery, openapi, openapi_pb, pki, resources, streams, tables, tokens
from netsim.apiserver.status import StatusError, bad_request, status
from netsim.apiserver.watch import Broadcaster, WatchRequest
from netsim.model import conversion, k8s

log = logging.getLogger("netsim.apiserver")

PUBLIC = ("/healthz", "/livez", "/readyz", "/version")  # anonymous, as kubeadm's system:public-info-viewer
JSON = "application/json"
STORE = web.AppKey("store", Store)
CLUSTER = web.AppKey("cluster", str)
POOL = web.AppKey("pool", ThreadPoolExecutor)
LOCAL_READS = web.AppKey("local_reads", bool)
BROADCASTER = web.AppKey("broadcaster", Broadcaster)
INSECURE = web.AppKey("insecure", bool)  # plain HTTP, for tests of the routing only
PKI = web.AppKey("pki", pki.Paths)  # the cluster's certificates and token signing key


def _json(obj: dict, code: int = 200, content_type: str = JSON) -> web.Response:
    return web.Response(body=json.dumps(obj, separators=(",", ":")).encode(), status=code,
                        headers={"Content-Type": content_type})


def warning_header(text: str) -> str:
    """A warning as kube-apiserver sends it (RFC 7234 warn-code 299, agent "-", quoted text),
    which client-go hands to kubectl's warning handler ("Warning: <text>" on stderr)."""
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _written(request: web.Request, obj: dict, code: int = 200) -> web.Response:
    """A create's or update's answer, with the admission warnings of what was written."""
    response = _json(obj, code)
    if (obj.get("apiVersion"), obj.get("kind")) in admission.WARNED:  # else no config to read
        for text in await _run(request, registry.warnings, request.app[STORE], [obj]):
            response.headers.add("Warning", warning_header(text))
    return response


def error_response(exc: StatusError) -> web.Response:
    return _json(exc.status(), exc.code)


@web.middleware
async def guard(request: web.Request, handler):
    """Authentication (a client certificate from the cluster's CA) and Status for every error."""
    try:
        if not request.path.startswith(PUBLIC) and not _authenticated(request):
            raise StatusError(401, "Unauthorized", "Unauthorized")
        return await handler(request)
    except StatusError as exc:
        return error_response(exc)
    except web.HTTPException:
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:  # a bug: the client gets a Status, the log the traceback
        log.exception("%s %s failed", request.method, request.path_qs)
        return error_response(StatusError(500, f"Internal error occurred: {type(exc).__name__}: {exc}",
                                          "InternalError"))


def _authenticated(request: web.Request) -> bool:
    transport = request.transport
    if transport is None:
        return False
    if transport.get_extra_info("sslcontext") is None:
        return request.app[INSECURE]  # tests of the routing over plain HTTP only
    return bool(transport.get_extra_info("peercert"))


async def _run(request: web.Request, fn, *args):
    return await asyncio.get_running_loop().run_in_executor(request.app[POOL], functools.partial(fn, *args))


async def _read_one(request: web.Request, fn, *args):
    """A read of one object: on the event loop when the store is a local SQLite file (a WAL
    read does not wait for writers and takes tens of microseconds, where the hop to the pool
    and back costs ~150 us of CPU, 40% of a GET), else in the pool (etcd is a network call)."""
    if request.app[LOCAL_READS]:
        return fn(*args)
    return await _run(request, fn, *args)


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "") or request.query.get("as") == "Table"


def _wants_aggregated(request: web.Request) -> bool:
    return "as=APIGroupDiscoveryList" in request.headers.get("Accept", "")



def to_table(request: web.Request, kind: k8s.Kind, objects: list[dict], list_meta: dict | None = None) -> dict:
    now = time.time()
    # A custom resource's columns come with its kind, registered from its CRD (k8s.crd_kinds).
    extra = None if kind.printer_columns is None else {"additionalPrinterColumns": list(kind.printer_columns)}
    # The printers read the storage version (kube-apiserver's read its internal one).
    shown = [conversion.to_version(o, kind.storage_version) for o in objects] if kind.stored_as else objects
    t = tables.table(kind.kind, shown, now, extra)
    if request.query.get("includeObject") == "Object":
        for row, obj in zip(t["rows"], objects, strict=False):
            row["object"] = obj
    elif request.query.get("includeObject") == "None":
        for row in t["rows"]:
            row.pop("object", None)
    if list_meta:
        t["metadata"] = {k: v for k, v in list_meta.items() if k in ("resourceVersion", "continue",
                                                                     "remainingItemCount")}
    return t


# -- discovery and the fixed paths -------------------------------------------------------------

async def version(_request: web.Request) -> web.Response:
    return _json(discovery.version())


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok", content_type="text/plain")


async def api_root(request: web.Request) -> web.Response:
    if _wants_aggregated(request):
        return _json(discovery.aggregated(core=True), content_type=discovery.AGGREGATED)
    return _json(discovery.api_versions())


async def apis_root(request: web.Request) -> web.Response:
    if _wants_aggregated(request):
        return _json(discovery.aggregated(core=False), content_type=discovery.AGGREGATED)
    return _json(discovery.api_group_list())



def _resource_infos() -> list:
    return list(k8s.ALL.values())


async def openapi_v2(request: web.Request) -> web.Response:
    media = openapi_pb.negotiate(request.headers.get("Accept", ""))
    if media is None:
        raise StatusError(406, f"only {openapi_pb.JSON} and {openapi_pb.CONTENT_TYPE} are served", "NotAcceptable")
    crds = await _run(request, request.app[STORE].list, k8s.prefix("CustomResourceDefinition"))
    if media == openapi_pb.CONTENT_TYPE:
        return web.Response(body=openapi.openapi_v2_protobuf(_resource_infos(), crds[0]), content_type=media)
    return _json(openapi.openapi_v2(_resource_infos(), crds[0]))


async def openapi_v3(request: web.Request) -> web.Response:
    rest = request.match_info.get("rest", "")
    crds = (await _run(request, request.app[STORE].list, k8s.prefix("CustomResourceDefinition")))[0]
    if not rest:
        return _json(openapi.openapi_v3_index(_resource_infos(), crds))
    doc = openapi.openapi_v3(rest, _resource_infos(), crds)
    if doc is None:
        raise StatusError(404, "the server could not find the requested resource", "NotFound")
    return _json(doc)


# -- the resources -------------------------------------------------------------------------

async def group_root(request: web.Request) -> web.Response:
    g = discovery.api_group(request.match_info["group"])
    if g is None:
        raise StatusError(404, "the server could not find the requested resource", "NotFound")
    return _json(g)


async def core(request: web.Request) -> web.Response:
    return await _dispatch(request, "", request.match_info["version"], request.match_info.get("rest", ""))


async def grouped(request: web.Request) -> web.Response:
    return await _dispatch(request, request.match_info["group"], request.match_info["version"],
                           request.match_info.get("rest", ""))


def _manager(request: web.Request) -> str:
    return resources.field_manager(request.query, request.headers.get("User-Agent", ""))


async def _body(request: web.Request) -> bytes:
    return await request.read()


async def _options(request: web.Request) -> dict:
    raw = await request.read()
    if not raw.strip():
        return {}
    doc = resources.decode(raw, request.content_type)
    if not isinstance(doc, dict):
        raise bad_request("DeleteOptions must be an object")
    return doc


async def _dispatch(request: web.Request, group: str, version: str, rest: str) -> web.StreamResponse:
    parts = [p for p in rest.split("/") if p]
    store = request.app[STORE]
    method = request.method
    q = request.query
    if not parts:
        if method != "GET":
            raise StatusError(405, "the server does not allow this method on the requested resource",
                              "MethodNotAllowed")
        doc = discovery.resource_list(group, version)
        if doc is None:
            raise StatusError(404, "the server could not find the requested resource", "NotFound")
        return _json(doc)
    t = resources.resolve(group, version, parts)
    if t.subresource in ("exec", "attach", "portforward", "log"):
        return await _stream(request, t)
    if t.subresource == "token":
        if method != "POST":  # create is the only verb of serviceaccounts/token
            raise StatusError(405, "the server does not allow this method on the requested resource",
                              "MethodNotAllowed")
        return await _token(request, t)
    if method == "GET" and (q.get("watch") in ("1", "true") and t.subresource is None):
        return await _watch(request, t)
    if method == "GET":
        if t.name is None:
            if not _wants_table(request):
                body = await _run(request, resources.list_json, store, t, q)
                if body is not None:
                    return web.Response(body=body, headers={"Content-Type": JSON})
            listed = await _run(request, resources.list_, store, t, q)
            if _wants_table(request):
                return _json(to_table(request, t.kind, listed["items"], listed["metadata"]))
            return _json(listed)
        if t.subresource == "scale":
            return _json(await _read_one(request, resources.scale_of, store, t))
        obj = await _read_one(request, resources.get, store, t)
        if _wants_table(request):
            return _json(to_table(request, t.kind, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}))
        return _json(obj)
    if method == "POST":
        doc = resources.decode(await _body(request), request.content_type)
        created = await _run(request, resources.create, store, t, doc, q, _manager(request))
        return await _written(request, created, 201)
    if method == "PUT":
        if t.name is None:
            raise StatusError(405, "the server does not allow this method on the requested resource",
                              "MethodNotAllowed")
        doc = resources.decode(await _body(request), request.content_type)
        replaced = await _run(request, resources.replace, store, t, doc, q, _manager(request))
        return await _written(request, replaced) if t.subresource is None else _json(replaced)
    if method == "PATCH":
        if t.name is None:
            raise StatusError(405, "the server does not allow this method on the requested resource",
                              "MethodNotAllowed")
        body = await _body(request)
        patched = await _run(request, resources.patch, store, t, body, request.headers.get("Content-Type", ""),
                             q, registry.now(), _manager(request))
        return await _written(request, patched) if t.subresource is None else _json(patched)
    if method == "DELETE":
        options = await _options(request)
        if t.name is None:
            listed = await _run(request, resources.delete_collection, store, t, options, q)
            return _json(listed)
        obj, gone = await _run(request, resources.delete, store, t, options, q)
        if gone and t.kind.kind != "Pod":
            meta = obj["metadata"]
            return _json(status(200, "", details={"name": meta["name"], **({"group": t.kind.group} if t.kind.group
                                                                              else {}),
                                                  "kind": t.kind.plural, "uid": meta.get("uid")}, success=True))
        return _json(obj)
    raise StatusError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")


async def _token(request: web.Request, t: resources.Target) -> web.Response:
    """POST serviceaccounts/NAME/token: a TokenRequest answered (netsim.apiserver.tokens)."""
    store = request.app[STORE]
    doc = resources.decode(await _body(request), request.content_type)
    account = await _read_one(request, resources.get, store, resources.Target(t.kind, t.namespace, t.name))

    def lookup(kind: str, name: str) -> dict:
        k = k8s.KINDS[kind]
        return resources.get(store, resources.Target(k, t.namespace if k.namespaced else None, name))
    return _json(await _run(request, tokens.token_request, request.app[PKI], account, doc, lookup), 201)


async def _watch(request: web.Request, t: resources.Target) -> web.StreamResponse:
    w = WatchRequest(request.app[BROADCASTER], t, request.query, functools.partial(_run, request))
    await w.start()
    table = _wants_table(request)
    resp = web.StreamResponse(headers={"Content-Type": JSON, "Transfer-Encoding": "chunked"})
    await resp.prepare(request)
    headers = True
    try:
        async for ev in w.events():
            obj = ev["object"]
            if table and ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                obj = to_table(request, t.kind, [obj], {"resourceVersion": obj["metadata"].get("resourceVersion")})
                if not headers:
                    # kube-apiserver's watch encoder: column definitions on the first event only
                    # (NoHeaders after it); kubectl keeps the last ones it saw.
                    obj["columnDefinitions"] = None
            headers = False
            await resp.write(json.dumps({"type": ev["type"], "object": obj}, separators=(",", ":")).encode()
                             + b"\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        w.close()
    return resp


async def _stream(request: web.Request, t: resources.Target) -> web.StreamResponse:
    pod = await _run(request, resources.get, request.app[STORE], resources.Target(t.kind, t.namespace, t.name))
    handler = {"exec": streams.exec_pod, "attach": streams.attach,
               "portforward": streams.port_forward, "log": streams.pod_log}[t.subresource]
    return await handler(request, pod, request.app[CLUSTER])


async def not_found(_request: web.Request) -> web.Response:
    raise StatusError(404, "the server could not find the requested resource", "NotFound")


def _on_event(ev: Event) -> None:
    """CRDs written by anyone (kubectl, netsim apply) register their resources here."""
    if k8s.kind_of_key(ev.key) == "CustomResourceDefinition":
        crds.after_write(ev.object, deleted=ev.type == "DELETED")


def make_app(store: Store, cluster: str, insecure: bool = False, pki_paths: pki.Paths | None = None) -> web.Application:
    """pki_paths: where the cluster's certificates are (None: its state directory's pki)."""
    app = web.Application(middlewares=[guard], client_max_size=16 * 1024 * 1024)
    app[STORE] = store
    app[CLUSTER] = cluster
    app[POOL] = ThreadPoolExecutor(max_workers=8, thread_name_prefix="apiserver")
    from netsim.api.store.sqlite import SQLiteStore

    app[LOCAL_READS] = isinstance(store, SQLiteStore)
    app[INSECURE] = insecure
    app[PKI] = pki_paths or pki.paths(cluster)
    crds.load_crds(store)

    async def startup(a: web.Application) -> None:
        a[BROADCASTER] = Broadcaster(store, asyncio.get_running_loop(), _on_event)
        a[BROADCASTER].start()

    async def cleanup(a: web.Application) -> None:
        a[BROADCASTER].close()
        a[POOL].shutdown(wait=False, cancel_futures=True)

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    r = app.router
    r.add_get("/version", version)
    for p in ("/healthz", "/livez", "/readyz"):
        r.add_get(p, health)
        r.add_get(p + "/{check:.*}", health)
    r.add_get("/api", api_root)
    r.add_get("/apis", apis_root)
    r.add_get("/openapi/v2", openapi_v2)
    r.add_get("/openapi/v3", openapi_v3)
    r.add_get("/openapi/v3/{rest:.*}", openapi_v3)
    r.add_route("*", "/api/{version}", core)
    r.add_route("*", "/api/{version}/{rest:.*}", core)
    r.add_get("/apis/{group}", group_root)
    r.add_route("*", "/apis/{group}/{version}", grouped)
    r.add_route("*", "/apis/{group}/{version}/{rest:.*}", grouped)
    r.add_route("*", "/{rest:.*}", not_found)
    return app
