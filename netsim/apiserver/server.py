"""What runs in the API server's process (netsim.apiserver.process starts and stops it): the
listening sockets on loopback and, inside the control-plane node's namespace, on its address
:6443, TLS with optional client certificates, and the app until SIGTERM.
May import: the standard library, aiohttp, netsim.kernel, netsim.model, netsim.api and
netsim.apiserver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import ssl

from aiohttp import web

from netsim import kernel
from netsim.api.store import open_store
from netsim.apiserver import pki
from netsim.apiserver.app import make_app
from netsim.apiserver.process import INFO_FILE, SECURE_PORT, info_path, read_info

log = logging.getLogger("netsim.apiserver")


def ssl_context(p: pki.Paths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(p.ca_crt))
    ctx.load_cert_chain(str(p.server_crt), str(p.server_key))
    # Optional, not required: a client without a certificate gets a 401 Status (as from
    # kube-apiserver), not a failed handshake; one with a certificate of another CA still fails.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def _listener(address: str, port: int, netns: str | None) -> socket.socket:
    sock = kernel.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM) if netns else \
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(512)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def serve(cluster: str, store_url: str, node_netns: str | None, node_ip: str | None) -> None:
    """Run the server until SIGTERM/SIGINT."""
    p = pki.paths(cluster)
    store = open_store(store_url)
    loopback = _listener("127.0.0.1", 0, None)
    in_node = _listener(node_ip, SECURE_PORT, node_netns) if node_netns and node_ip else None
    ctx = ssl_context(p)

    async def main() -> None:
        app = make_app(store, cluster)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.SockSite(runner, loopback, ssl_context=ctx).start()
        if in_node is not None:
            await web.SockSite(runner, in_node, ssl_context=ctx).start()
        port = loopback.getsockname()[1]
        tmp = info_path(cluster).with_name(f".{INFO_FILE}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "port": port, "nodeAddress": node_ip}, f)
        os.replace(tmp, info_path(cluster))
        log.info("serving on https://127.0.0.1:%d%s", port, f" and https://{node_ip}:{SECURE_PORT}" if in_node else "")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        with contextlib.suppress(OSError):
            info = read_info(cluster)
            if info and info.get("pid") == os.getpid():
                info_path(cluster).unlink()
        store.close()
