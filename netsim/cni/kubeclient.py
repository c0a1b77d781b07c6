"""A Kubernetes API client for CNI plugins, standard library only: what calico-ipam needs to
keep its IPAM objects in the API, as upstream's plugin does in the kubernetes datastore mode.

:func:`load_kubeconfig` reads a kubeconfig (JSON, or the block YAML that kubectl and netsim
write: mappings, lists of mappings, plain and quoted scalars) and :class:`KubeClient` talks to
the server it names over HTTP(S) with its CA, client certificate/key or bearer token.  The
client key never touches the disk: it is handed to OpenSSL through a memfd.  One connection
is kept open per client and re-opened once when the server closed it.

A connection is opened in the network namespace of the calling thread (a plugin call runs in
its node's namespace), so the server address must be reachable from there.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import ssl
import urllib.parse
from dataclasses import dataclass


class KubeconfigError(ValueError):
    """The kubeconfig cannot be read or does not say how to reach a server."""


class ApiError(Exception):
    """The server answered with an error status (``reason`` from its Status object)."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Unreachable(OSError):
    """No answer from the server (refused, timed out, TLS failure)."""


# -- a block-YAML subset, enough for kubeconfigs ------------------------------------------
def _scalar(text: str):
    text = text.strip()
    if text in ("", "~", "null", "Null", "NULL"):
        return None if text else ""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    if text[0] == "'" and text[-1] == "'" and len(text) >= 2:
        return text[1:-1].replace("''", "'")
    if text[0] == '"' and text[-1] == '"' and len(text) >= 2:
        return json.loads(text)
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    with contextlib.suppress(ValueError):
        return int(text)
    return text


def _split_key(text: str) -> tuple[str, str] | None:
    """``key: value`` -> (key, value); None when the line is no mapping entry."""
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = text.find(quote, 1)
        if end < 0 or text[end + 1:end + 2] != ":":
            return None
        return text[1:end], text[end + 2:]
    key, sep, rest = text.partition(": ")
    if not sep:
        if text.endswith(":"):
            return text[:-1], ""
        return None
    return key, rest


def parse_yaml(text: str):
    """The subset of YAML kubeconfigs use: block mappings and sequences, scalars, {} and []."""
    lines = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise KubeconfigError("tabs in indentation are not YAML")
        lines.append((len(raw) - len(raw.lstrip(" ")), stripped))
    pos = 0

    def block(indent: int):
        nonlocal pos
        if pos >= len(lines):
            return None
        first_indent, first = lines[pos]
        if first_indent < indent:
            return None
        if first.startswith("- ") or first == "-":
            return sequence(first_indent)
        return mapping(first_indent)

    def mapping(indent: int, out: dict | None = None) -> dict:
        nonlocal pos
        out = {} if out is None else out
        while pos < len(lines):
            ind, text = lines[pos]
            if ind < indent:
                break
            if ind > indent or text.startswith("- "):
                raise KubeconfigError(f"unexpected indentation at {text[:40]!r}")
            pair = _split_key(text)
            if pair is None:
                raise KubeconfigError(f"expected 'key: value' at {text[:40]!r}")
            key, value = pair
            pos += 1
            if value.strip() and not value.strip().startswith("#"):
                out[key] = _scalar(value.split(" #", 1)[0] if value.lstrip()[:1] not in "'\"" else value)
            else:
                # A sequence may sit at the same indentation as its key.
                nxt = lines[pos] if pos < len(lines) else None
                if nxt and (nxt[0] > indent or (nxt[0] == indent and nxt[1].startswith("-"))):
                    out[key] = block(nxt[0])
                else:
                    out[key] = None
        return out

    def sequence(indent: int) -> list:
        nonlocal pos
        out = []
        while pos < len(lines):
            ind, text = lines[pos]
            if ind != indent or not (text.startswith("- ") or text == "-"):
                break
            rest = text[2:].strip() if text != "-" else ""
            if not rest:
                pos += 1
                out.append(block(indent + 1))
                continue
            pair = _split_key(rest)
            if pair is None:
                pos += 1
                out.append(_scalar(rest))
                continue
            # "- key: value" opens a mapping whose other keys sit under the first one.
            lines[pos] = (indent + 2 + (len(text) - 2 - len(text[2:].lstrip())), rest)
            out.append(mapping(lines[pos][0]))
        return out

    doc = block(0)
    if pos != len(lines):
        raise KubeconfigError(f"cannot read line {lines[pos][1][:40]!r}")
    return doc


# -- kubeconfig ---------------------------------------------------------------------------
@dataclass
class Target:
    server: str
    ca_pem: bytes | None = None
    insecure: bool = False
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    token: str | None = None


def _named(doc: dict, section: str, name: str, what: str, path: str) -> dict:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry.get(what) or {}
    raise KubeconfigError(f"kubeconfig {path}: no {what} named {name!r} in {section}")


def _data(entry: dict, key: str, base: str) -> bytes | None:
    if entry.get(f"{key}-data"):
        try:
            return base64.b64decode(entry[f"{key}-data"], validate=False)
        except ValueError as exc:
            raise KubeconfigError(f"{key}-data is not base64") from exc
    if entry.get(key):
        file = entry[key] if os.path.isabs(entry[key]) else os.path.join(base, entry[key])
        with open(file, "rb") as f:
            return f.read()
    return None


def load_kubeconfig(path: str) -> Target:
    """The server and credentials of the kubeconfig's current context."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise KubeconfigError(f"kubeconfig {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError:
        doc = parse_yaml(text)
    if not isinstance(doc, dict):
        raise KubeconfigError(f"kubeconfig {path}: not a mapping")
    context_name = doc.get("current-context")
    if not context_name:
        contexts = doc.get("contexts") or []
        if len(contexts) != 1:
            raise KubeconfigError(f"kubeconfig {path}: no current-context")
        context_name = contexts[0].get("name")
    context = _named(doc, "contexts", context_name, "context", path)
    cluster = _named(doc, "clusters", context.get("cluster"), "cluster", path)
    user = _named(doc, "users", context.get("user"), "user", path) if context.get("user") else {}
    if not cluster.get("server"):
        raise KubeconfigError(f"kubeconfig {path}: cluster {context.get('cluster')!r} has no server")
    base = os.path.dirname(os.path.abspath(path))
    try:
        token = user.get("token")
        if not token and user.get("tokenFile"):
            with open(user["tokenFile"]) as f:
                token = f.read().strip()
        return Target(server=cluster["server"], ca_pem=_data(cluster, "certificate-authority", base),
                      insecure=bool(cluster.get("insecure-skip-tls-verify")),
                      cert_pem=_data(user, "client-certificate", base), key_pem=_data(user, "client-key", base),
                      token=token)
    except OSError as exc:
        raise KubeconfigError(f"kubeconfig {path}: {exc}") from exc


def _ssl_context(t: Target) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=t.ca_pem.decode() if t.ca_pem else None)
    if t.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if t.cert_pem and t.key_pem:
        # load_cert_chain wants a path: an anonymous memory file keeps the key off the disk.
        fd = os.memfd_create("netsim-kube-client", os.MFD_CLOEXEC)
        try:
            os.write(fd, t.cert_pem + b"\n" + t.key_pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    return ctx


class KubeClient:
    """JSON requests to one API server; :meth:`request` returns the decoded body."""

    def __init__(self, kubeconfig: str, timeout: float = 10.0):
        self.target = load_kubeconfig(kubeconfig)
        url = urllib.parse.urlsplit(self.target.server)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise KubeconfigError(f"kubeconfig {kubeconfig}: server {self.target.server!r} is no http(s) URL")
        self.scheme, self.host, self.prefix = url.scheme, url.hostname, url.path.rstrip("/")
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.timeout = timeout
        self.ctx = _ssl_context(self.target) if url.scheme == "https" else None
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.ctx is not None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ctx)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.target.token:
            headers["Authorization"] = f"Bearer {self.target.token}"
        for attempt in (0, 1):
            conn = self._connect()
            try:
                conn.request(method, self.prefix + path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()  # a kept-alive connection the server closed: one fresh try
                if attempt:
                    raise Unreachable(f"{self.target.server}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise Unreachable(f"{self.target.server}: {exc}") from exc
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {}
        if resp.status >= 400:
            raise ApiError(resp.status, str(doc.get("reason") or resp.reason),
                           str(doc.get("message") or raw[:200].decode(errors="replace")))
        return doc
