"""The responder's HTTP parsing, pure (no socket): tests/kernel/test_responder.py serves real
requests."""

from __future__ import annotations

import json

from netsim.node.responder import Identity, canonical, http_response, parse_head


def test_canonical_header_names_as_go_writes_them():
    assert canonical("x-forwarded-for") == "X-Forwarded-For"
    assert canonical("X-REAL-IP") == "X-Real-Ip"  # Go's textproto, which echo-basic shows
    assert canonical("content-length") == "Content-Length"


def test_parse_head_moves_host_out_and_keeps_every_value():
    r = parse_head(b"GET /a/b?x=1 HTTP/1.1\r\nHost: Backend.aa.com:8080\r\nX-A: 1\r\nx-a: 2\r\n"
                   b"Content-Length: 12\r\nbad line\r\n : no name")
    assert (r.method, r.path, r.proto, r.host, r.length) == ("GET", "/a/b?x=1", "HTTP/1.1", "Backend.aa.com:8080", 12)
    assert r.headers == {"X-A": ["1", "2"], "Content-Length": ["12"]}
    assert parse_head(b"GET / SPDY/3\r\n") is None and parse_head(b"hello") is None
    assert parse_head(b"POST / HTTP/1.0\r\nContent-Length: nope").length == 0


def test_answer_with_a_request_adds_the_echo_fields_only_then():
    ident = Identity("web-1", "default", "w1")
    plain = json.loads(ident.answer(("10.0.0.1", 5), 80, "tcp"))
    assert set(plain) == {"pod", "namespace", "node", "client", "port", "protocol"}
    echoed = json.loads(ident.answer(("10.0.0.1", 5), 80, "tcp", parse_head(b"HEAD /x HTTP/1.1\r\nHost: h")))
    assert {k: echoed[k] for k in ("method", "path", "host", "proto", "headers")} == \
        {"method": "HEAD", "path": "/x", "host": "h", "proto": "HTTP/1.1", "headers": {}}


def test_http_response_head_only_keeps_the_length():
    full = http_response(503, b"{}\n")
    assert full.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and full.endswith(b"\r\n\r\n{}\n")
    head = http_response(200, b"{}\n", head_only=True)
    assert b"Content-Length: 3\r\n" in head and head.endswith(b"\r\n\r\n")
