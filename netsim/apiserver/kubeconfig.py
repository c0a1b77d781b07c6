"""kubeconfig files for a cluster's API server: the standalone one `netsim kubeconfig` prints,
and the context/cluster/user ``netsim-<cluster>`` that `up` merges into the user's kubeconfig
($KUBECONFIG's first file or ~/.kube/config, as kind does) and `down` takes out again.
May import: the standard library, PyYAML, netsim.model and netsim.apiserver.pki."""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path

import yaml

from netsim.apiserver import pki
from netsim.model import state

RECORD = "kubeconfig.json"  # in the state dir: which file `up` wrote to, and whether it made it


def entry_name(cluster: str) -> str:
    return f"netsim-{cluster}"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def standalone(cluster: str, server: str, p: pki.Paths) -> dict:
    name = entry_name(cluster)
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(p.ca_crt)}}],
        "users": [{"name": name, "user": {"client-certificate-data": _b64(p.admin_crt),
                                          "client-key-data": _b64(p.admin_key)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def default_path() -> Path:
    env = os.environ.get("KUBECONFIG")
    if env:
        first = next((p for p in env.split(os.pathsep) if p), None)
        if first:
            return Path(first).expanduser()
    return Path.home() / ".kube" / "config"


def _read(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.netsim.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, default_flow_style=False, sort_keys=False)
    os.replace(tmp, path)


def _without(doc: dict, name: str) -> dict:
    for section in ("clusters", "users", "contexts"):
        if isinstance(doc.get(section), list):
            doc[section] = [e for e in doc[section] if not (isinstance(e, dict) and e.get("name") == name)]
    if doc.get("current-context") == name:
        doc["current-context"] = ""
    return doc


def merge(cluster: str, config: dict, path: Path | None = None) -> Path:
    """Put the cluster's entries into the user's kubeconfig, replacing older ones of the same
    name and keeping every other entry; its context becomes the current one."""
    path = path or default_path()
    created = not path.exists()
    doc = _without(_read(path), entry_name(cluster))
    doc.setdefault("apiVersion", "v1")
    doc.setdefault("kind", "Config")
    doc.setdefault("preferences", {})
    for section in ("clusters", "users", "contexts"):
        doc[section] = (doc.get(section) or []) + config[section]
    doc["current-context"] = config["current-context"]
    _write(path, doc)
    record = state.cluster_dir(cluster) / RECORD
    had = _read_record(cluster)
    # A re-run `up` keeps the first answer: the file was created by netsim or it was not.
    created = had.get("created", created) if had.get("path") == str(path) else created
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"path": str(path), "created": created}, f)
    return path


def _read_record(cluster: str) -> dict:
    try:
        return json.loads((state.cluster_dir(cluster) / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def remove(cluster: str) -> list[Path]:
    """Take the cluster's entries out of the kubeconfig `up` wrote them to (and of the default
    one, should the record be lost); a file netsim created that has nothing else left goes."""
    record = _read_record(cluster)
    targets = [Path(record["path"])] if record.get("path") else []
    if default_path() not in targets:
        targets.append(default_path())
    changed = []
    for path in targets:
        doc = _read(path)
        name = entry_name(cluster)
        if not any(isinstance(e, dict) and e.get("name") == name
                   for s in ("clusters", "users", "contexts") for e in doc.get(s) or []):
            continue
        doc = _without(doc, name)
        empty = not any(doc.get(s) for s in ("clusters", "users", "contexts"))
        if empty and record.get("created") and str(path) == record.get("path"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            _write(path, doc)
        changed.append(path)
    return changed
