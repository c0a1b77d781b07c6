"""The built-in responder as an HTTP echo server, in a real namespace over real TCP: what curl
and a hand-made client (a request cut into single-byte segments, a body, HEAD) get back.
The pure parsing is in tests/unit/test_responder_http.py."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from netsim import kernel
from netsim.model import names
from netsim.node.responder import Identity, Responders
from tests.conftest import unique_name

PORT = 8080


@pytest.fixture
def echo():
    """A namespace with loopback up and the responder of pod default/web on PORT."""
    name = names.netns_name(unique_name("rs"), "pod")
    ns = kernel.Namespace.create(name)
    responders = Responders()
    try:
        with ns.batch() as b:
            b.set_link("lo", index=1, up=True)
        assert responders.ensure("default/web", name, Identity("web", "default", "node1"), [PORT]) == []
        yield name
    finally:
        responders.close()
        ns.close()
        kernel.remove_netns([name])


def _exchange(netns: str, chunks: list[bytes], pause: float = 0.0) -> bytes:
    with kernel.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one send, one segment
        sock.settimeout(5)
        sock.connect(("127.0.0.1", PORT))
        for chunk in chunks:
            sock.sendall(chunk)
            time.sleep(pause)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


def test_curl_gets_method_path_host_and_headers_echoed(echo):
    out = subprocess.run(["ip", "netns", "exec", echo, "curl", "-sS", "-i", "-H", "Host: backend.aa.com",
                          "-H", "x-echo-me: one", "-H", "X-Echo-Me: two",
                          f"http://127.0.0.1:{PORT}/api/v1?q=1&r=2"], capture_output=True, timeout=10)
    assert out.returncode == 0, out.stderr
    status, headers, body = _split(out.stdout)
    assert status == 200 and headers["Content-Type"] == "application/json" and headers["Connection"] == "close"
    answer = json.loads(body)
    # netsim's own fields, unchanged...
    assert (answer["pod"], answer["namespace"], answer["node"], answer["port"], answer["protocol"]) == \
        ("web", "default", "node1", PORT, "tcp")
    assert answer["client"].startswith("127.0.0.1:")
    # ...and the echo's, named as the conformance echo servers name them.
    assert (answer["method"], answer["path"], answer["host"], answer["proto"]) == \
        ("GET", "/api/v1?q=1&r=2", "backend.aa.com", "HTTP/1.1")
    assert answer["headers"]["X-Echo-Me"] == ["one", "two"]  # canonical name, every value in order
    assert answer["headers"]["User-Agent"][0].startswith("curl/") and "Host" not in answer["headers"]


def test_a_request_in_single_byte_segments_with_a_body(echo):
    body = b'{"a": 1}' * 100
    request = (b"POST /form HTTP/1.1\r\nHost: frontend.aa.com\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    head = [request[i:i + 1] for i in range(len(request) - len(body))]
    response = _exchange(echo, [*head, body[:300], body[300:]], pause=0.002)
    status, headers, out = _split(response)
    answer = json.loads(out)
    assert status == 200 and int(headers["Content-Length"]) == len(out)
    assert (answer["method"], answer["path"], answer["host"]) == ("POST", "/form", "frontend.aa.com")
    assert answer["headers"]["Content-Length"] == [str(len(body))]


def test_head_gets_headers_only_and_status_path_sets_the_status(echo):
    status, headers, body = _split(_exchange(echo, [b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"]))
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    status, _, body = _split(_exchange(echo, [b"GET /status/503 HTTP/1.0\r\n\r\n"]))
    assert status == 503 and json.loads(body)["path"] == "/status/503"


def test_a_plain_tcp_client_still_gets_one_json_line(echo):
    line = _exchange(echo, [b"netsim-probe\n"])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    answer = json.loads(line)
    assert answer["pod"] == "web" and "method" not in answer


def test_an_oversized_head_gets_431(echo):
    response = _exchange(echo, [b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n"])
    assert response.startswith(b"HTTP/1.1 431 ")
