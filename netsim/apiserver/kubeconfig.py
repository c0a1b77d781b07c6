"""kubeconfig files for a cluster's API server: the standalone one `netsim kubeconfig` prints,
and the context/cluster/user ``netsim-<cluster>`` that `up` merges into the user's kubeconfig
($KUBECONFIG's first file or ~/.kube/config, as kind does) and `down` takes out again, leaving
every other entry as it was.  A file that is no kubeconfig is refused before anything is built
(:func:`check`); a read-modify-write holds a lock on the file's directory (no lock file to
leave behind), so clusters going up or down at once do not lose each other's entries.
May import: the standard library, PyYAML, netsim.model and netsim.apiserver.pki."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from netsim.apiserver import pki
from netsim.model import state

RECORD = "kubeconfig.json"  # in the state dir: which file `up` wrote to, and whether it made it
SECTIONS = ("clusters", "users", "contexts")
LOCK_WAIT = 10.0


class KubeconfigError(ValueError):
    pass


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
    """The kubeconfig at ``path`` ({} when there is none); KubeconfigError when it is not one,
    so netsim never writes over a file it cannot read back."""
    fix = "fix or move it, or point KUBECONFIG at another file"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise KubeconfigError(f"kubeconfig {path}: cannot read it ({exc}); {fix}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise KubeconfigError(f"kubeconfig {path}: not valid YAML{at}; {fix}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise KubeconfigError(f"kubeconfig {path}: a {type(doc).__name__}, not a kubeconfig (a mapping); {fix}")
    for section in SECTIONS:
        if doc.get(section) is not None and not isinstance(doc[section], list):
            raise KubeconfigError(f"kubeconfig {path}: {section} must be a list; {fix}")
    return doc


def check(path: Path | None = None) -> Path:
    """The kubeconfig `up` will write to, if netsim can merge into it (KubeconfigError if not)."""
    path = path or default_path()
    if path.is_dir():
        raise KubeconfigError(f"kubeconfig {path} is a directory; point KUBECONFIG at a file")
    _read(path)
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the kubeconfig's directory while reading and writing it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # Bounded: a kubeconfig kept in netsim's state directory, whose lock `down` holds
        # while it calls remove, must not hang it.
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise KubeconfigError(f"kubeconfig {path}: its directory stayed locked for {LOCK_WAIT:g}s; "
                                          "keep the kubeconfig outside netsim's state directory") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.netsim.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, default_flow_style=False, sort_keys=False)
    os.replace(tmp, path)


def _without(doc: dict, name: str) -> dict:
    for section in SECTIONS:
        if isinstance(doc.get(section), list):
            doc[section] = [e for e in doc[section] if not (isinstance(e, dict) and e.get("name") == name)]
    if doc.get("current-context") == name:
        doc["current-context"] = ""
    return doc


def merge(cluster: str, config: dict, path: Path | None = None) -> Path:
    """Put the cluster's entries into the user's kubeconfig, replacing older ones of the same
    name and keeping every other entry; its context becomes the current one."""
    path = check(path)
    with _locked(path):
        created = not path.exists()
        doc = _without(_read(path), entry_name(cluster))
        doc.setdefault("apiVersion", "v1")
        doc.setdefault("kind", "Config")
        doc.setdefault("preferences", {})
        for section in SECTIONS:
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
    one, should the record be lost), as `kind delete cluster` does: every other entry stays,
    a current-context that named the cluster becomes "".  A file netsim created that has
    nothing else left goes.  KubeconfigError (after the other files) for a file it cannot read."""
    record = _read_record(cluster)
    targets = [Path(record["path"])] if record.get("path") else []
    if default_path() not in targets:
        targets.append(default_path())
    changed, errors = [], []
    for path in targets:
        try:
            if _remove_from(path, entry_name(cluster), bool(record.get("created")) and
                            str(path) == record.get("path")):
                changed.append(path)
        except (KubeconfigError, OSError) as exc:
            errors.append(str(exc))
    if errors:
        raise KubeconfigError("; ".join(errors))
    return changed


def _remove_from(path: Path, name: str, created: bool) -> bool:
    if not path.is_file():
        return False
    with _locked(path):
        doc = _read(path)
        if not any(isinstance(e, dict) and e.get("name") == name for s in SECTIONS for e in doc.get(s) or []):
            return False
        doc = _without(doc, name)
        if created and not any(doc.get(s) for s in SECTIONS):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            _write(path, doc)
    return True
