"""What runs when a runtime execs one of netsim's plugins.

The fast path hands the call (plugin type, environment, stdin) to the node agent's plugin
server over a Unix socket and relays its answer, as Calico's and Cilium's CNI binaries do:
the server already has pyroute2 loaded and runs the same plugin code in this process's
network namespace.  Python starts in ~8 ms with ``-S``; this module therefore imports only
``os``, ``sys`` and ``_socket`` (``json`` or ``socket`` alone would add ~10 ms).

With no server (no ``NETSIM_CNI_SOCKET``, or nothing listening) the plugin runs here.
"""

import _socket
import os
import sys

SOCKET_ENV = "NETSIM_CNI_SOCKET"
REPLY_TIMEOUT_S = 120
TIMEOUT_ERROR = b'{"cniVersion":"1.1.0","code":11,"msg":"the netsim plugin server did not answer in time"}\n'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read_stdin() -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(0, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def encode_request(plugin_type: str, env: dict, stdin: bytes) -> bytes:
    env_block = b"\0".join(f"{k}={v}".encode() for k, v in env.items())
    head = plugin_type.encode()
    return (len(head).to_bytes(4, "little") + head + len(env_block).to_bytes(4, "little") + env_block + stdin)


def _call_server(path: str, request: bytes) -> tuple[int, bytes]:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.sendall(request)
        sock.shutdown(_socket.SHUT_WR)
        sock.settimeout(REPLY_TIMEOUT_S)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except _socket.timeout:
                # The call may still be running there: doing it here too could double it.
                os.write(1, TIMEOUT_ERROR)
                raise SystemExit(1) from None
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    reply = b"".join(chunks)
    if len(reply) < 4:
        raise OSError("plugin server closed the connection without an answer")
    return int.from_bytes(reply[:4], "little", signed=True), reply[4:]


def _has_dependencies() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyroute2") is not None


def _reexec_with_venv(plugin_type: str, stdin: bytes) -> None:
    """The interpreter that ran us has no pyroute2 (e.g. /usr/bin/python3 found on a
    runtime's PATH): run the checkout's virtualenv instead, stdin handed over on a pipe."""
    venv = os.path.join(ROOT, ".venv")
    python = os.path.join(venv, "bin", "python3")
    # The venv's python is a symlink to the base interpreter: compare prefixes, not binaries.
    if not os.path.exists(python) or os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    r, w = os.pipe()
    if len(stdin) < 65536:
        os.write(w, stdin)
        os.close(w)
    else:  # larger than a pipe buffer: a child writes it while we exec
        if os.fork() == 0:
            os.close(r)
            os.write(w, stdin)
            os._exit(0)
        os.close(w)
    os.dup2(r, 0)
    env = dict(os.environ)
    env.pop(SOCKET_ENV, None)
    os.execve(python, [python, "-m", "netsim.cni.shim", plugin_type], env)


def run_here(plugin_type: str, stdin: bytes) -> None:
    if os.environ.pop("NETSIM_CNI_STDIN_FD", None) == "0":
        stdin = _read_stdin()  # the compiled launcher hands over what it read on a pipe
    if sys.flags.no_site:
        import site

        site.main()
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    if not _has_dependencies():
        _reexec_with_venv(plugin_type, stdin)
    from netsim.cni import spec

    code, out = spec.run(plugin_type, dict(os.environ), stdin)
    os.write(1, out)
    raise SystemExit(code)


def _start_standalone(path: str) -> None:
    """Start netsim/cni/standalone.py detached (as shim.c does) and wait until it listens or
    says it will not (the ready pipe closes)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.set_inheritable(w, True)
            env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": ROOT}
            os.execve(sys.executable, [sys.executable, "-m", "netsim.cni.standalone", path, "--ready-fd", str(w)],
                      env)
        finally:
            os._exit(127)
    os.close(w)
    os.waitpid(pid, 0)
    import select

    if select.select([r], [], [], 30)[0]:
        os.read(r, 1)
    os.close(r)


def _try(path: str, plugin_type: str, stdin: bytes) -> None:
    """Hand the call to the server on ``path``; returns only when it did not run there."""
    try:
        code, out = _call_server(path, encode_request(plugin_type, dict(os.environ), stdin))
    except OSError:
        return
    os.write(1, out)
    raise SystemExit(code)


def main(plugin_type: str | None = None, standalone_socket: str | None = None) -> None:
    """``standalone_socket``: the standalone server for this install (netsim/cni/standalone.py),
    tried, and started, when no agent's server is there."""
    plugin_type = plugin_type or os.path.basename(sys.argv[0])
    stdin = _read_stdin()
    path = os.environ.get(SOCKET_ENV)
    if path:
        _try(path, plugin_type, stdin)
    if standalone_socket and not os.environ.get("NETSIM_CNI_NO_STANDALONE"):
        _try(standalone_socket, plugin_type, stdin)
        _start_standalone(standalone_socket)
        _try(standalone_socket, plugin_type, stdin)
    run_here(plugin_type, stdin)


if __name__ == "__main__":
    main(sys.argv[1])
