"""A pod's log: what its responder writes (one line per connection it answered) and what
`kubectl logs` reads back.

netsim runs no containers, so the responder is a pod's only process with output.  Its log lives
under the cluster's state dir (``logs/<namespace>_<pod>_<uid>.log``, as kubelet keeps
/var/log/pods/<ns>_<pod>_<uid>/), goes with `down`, and is in the CRI log format the kubelet
reads (``<RFC3339Nano time> stdout F <line>``), so timestamps, sinceSeconds and tailLines work
as they do on a node.  A file over MAX_BYTES is rotated to ``.1`` (kubelet rotates at 10 MiB),
so a busy pod's log stays bounded.

Pure file work; knows only the state dir (netsim.model.state).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections import deque
from pathlib import Path

from netsim.model import state

MAX_BYTES = 1 << 20


def path(cluster: str, namespace: str, name: str, uid: str) -> Path:
    return state.cluster_dir(cluster) / "logs" / f"{namespace}_{name}_{uid}.log"


def remove(log: Path) -> None:
    for p in (log, log.with_name(log.name + ".1")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def timestamp(t: datetime.datetime | None = None) -> str:
    """RFC 3339 with nanoseconds, UTC, as the CRI log format writes it."""
    t = t or datetime.datetime.now(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


def cri_line(text: str, when: str | None = None) -> str:
    return f"{when or timestamp()} stdout F {text}\n"


class Writer:
    """Appends lines to one pod's log, rotating it past MAX_BYTES."""

    def __init__(self, log: Path):
        self.path = log
        log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._file = open(log, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the pod's life)

    def write(self, text: str) -> None:
        if self._file.closed:
            return
        self._file.write(cri_line(text))
        self._file.flush()
        if self._file.tell() > MAX_BYTES:
            self._file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self._file.close()


def parse(line: str) -> tuple[str, str]:
    """(timestamp, text) of one CRI log line; a line not in the format is all text."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) == 4 and parts[1] in ("stdout", "stderr") and parts[2] in ("F", "P"):
        return parts[0], parts[3]
    return "", line.rstrip("\n")


def parse_time(value: str) -> datetime.datetime:
    """An RFC 3339 time (nanoseconds allowed, as the log writes them) as an aware datetime."""
    v = value.strip()
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    main, _, rest = v.partition(".")
    if rest:
        zone = rest.lstrip("0123456789")
        digits = rest[:len(rest) - len(zone)]
        v = f"{main}.{digits[:6]:0<6}{zone}"
    return datetime.datetime.fromisoformat(v)


def render(lines: list[str], since: datetime.datetime | None = None, tail: int | None = None,
           timestamps: bool = False) -> list[str]:
    """The lines `kubectl logs` prints for these CRI log lines: those at or after ``since``,
    the last ``tail`` of them, each with its time in front when ``timestamps``."""
    out = []
    for line in lines:
        when, text = parse(line)
        if since is not None and when:
            try:
                if parse_time(when) < since:
                    continue
            except ValueError:
                pass
        out.append(f"{when} {text}\n" if timestamps and when else f"{text}\n")
    if tail is not None:
        out = out[-tail:] if tail > 0 else []
    return out


def read_lines(log: Path, tail: int | None = None) -> list[str]:
    """The log's lines, the rotated file's first; with ``tail`` only the last so many are kept
    in memory (the file is read once, line by line)."""
    keep: deque[str] = deque(maxlen=tail if tail is not None and tail >= 0 else None)
    for p in (log.with_name(log.name + ".1"), log):
        with contextlib.suppress(FileNotFoundError), open(p, encoding="utf-8", errors="replace") as f:
            keep.extend(f)
    return list(keep)


__all__ = ["MAX_BYTES", "Writer", "cri_line", "parse", "parse_time", "path", "read_lines", "remove", "render",
           "timestamp"]
