"""One real HTTP/1.1 request from a pod, node or external host, with the Host header and path
a user names: what `netsim check` sends for an expectation with `host:`/`path:`.

It knows the probe's references (netsim.observe.probe resolves them) and the responder's echo
answer (netsim.node.responder: the pod that answered, and what it received); through an
ingress controller the answer is the backend pod's, or the controller's own 404/503 page."""

from __future__ import annotations

import json
import socket
import ssl
import time

from netsim import fabric, kernel
from netsim.api.store import Store
from netsim.observe import probe

MAX_RESPONSE = 1 << 20
USER_AGENT = "netsim-check"


def request(netns: str, ip: str, port: int, host: str | None = None, path: str = "/", scheme: str = "http",
            timeout: float = 2.0, method: str = "GET") -> dict:
    """Send one request (Connection: close) and read the response.  Never raises for network
    outcomes: ``result`` is allow when an HTTP response came back (whatever its status)."""
    start = time.monotonic()
    out = {"result": "deny", "reason": "timeout", "status": None, "responder": None, "namespace": None,
           "clientIP": None, "latencyMs": None, "answer": None}
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host or ip}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n"
            "Connection: close\r\n\r\n").encode()
    raw = kernel.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        raw.settimeout(timeout)
        try:
            raw.connect((ip, port))
            sock = raw
            if scheme == "https":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE  # the controller's certificates are self-signed or test ones
                sni = (host or "").rsplit(":", 1)[0] or None
                sock = ctx.wrap_socket(raw, server_hostname=sni)
            sock.sendall(head)
            data = _read(sock, start + timeout)
        except TimeoutError:
            return out
        except ssl.SSLError as exc:
            out.update(reason=f"TLS handshake failed: {exc.reason or exc}")
            return out
        except OSError as exc:
            return probe.failed(out, exc.errno or 0, start)
    finally:
        raw.close()
    out["latencyMs"] = round((time.monotonic() - start) * 1000, 3)
    parsed = parse_response(data)
    if parsed is None:
        out["reason"] = "no HTTP response" if data else "closed without an answer"
        return out
    status, headers, body = parsed
    out.update(result="allow", reason=f"HTTP {status}", status=status, server=headers.get("server"))
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "pod" in answer:
        out.update(answer=answer, responder=answer.get("pod"), namespace=answer.get("namespace"),
                   clientIP=(answer.get("client") or "").rsplit(":", 1)[0] or None)
    return out


def _read(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while len(data) < MAX_RESPONSE:
        left = deadline - time.monotonic()
        if left <= 0:
            if data:
                break
            raise TimeoutError
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if data:
                break
            raise
        if not chunk:
            break
        data += chunk
        parsed = parse_response(data)
        if parsed is not None and parsed[1].get("content-length", "").isdigit() \
                and len(parsed[2]) >= int(parsed[1]["content-length"]):
            break
    return data


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """(status, headers by lowercase name, body) of an HTTP/1.x response; None when it is not one
    or its head has not all arrived."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, body


def http_probe(cluster: fabric.Cluster, store: Store, src: str, dst: str, port: int | None = None,
               host: str | None = None, path: str = "/", scheme: str = "http", timeout: float = 2.0) -> dict:
    """`probe.probe` for HTTP: the same references; the port defaults to 443 for https, else to
    the target's first port (a Service's, a pod's) or 80."""
    source, target = probe.endpoints(cluster, store, src, dst, port or (443 if scheme == "https" else None))
    result = request(source.netns, target.ip, target.port or 80, host, path, scheme, timeout)
    return {"from": src, "to": dst, "target": f"{target.ip}:{target.port or 80}", "protocol": scheme,
            "host": host, "path": path, **result}
