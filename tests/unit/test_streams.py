"""The channel framing of pods/exec and pods/portforward, the exec status, and pod logs (pure
parts of netsim.apiserver.streams and netsim.node.podlog); the real protocol against kubectl and
the Python client is in tests/e2e/test_streams.py."""

import datetime
import json

import pytest
from multidict import MultiDict

from netsim.apiserver import streams
from netsim.node import podlog


def test_binary_messages_are_a_channel_byte_and_data():
    assert streams.encode(streams.V5, streams.STDOUT, b"hi") == b"\x01hi"
    assert streams.decode(streams.V5, b"\x00input") == (streams.STDIN, b"input")
    assert streams.decode(streams.V5, bytes([255, 0])) == (streams.CLOSE, b"\x00")
    with pytest.raises(ValueError):
        streams.decode(streams.V4, b"")
    with pytest.raises(ValueError):
        streams.decode(streams.V4, "1text on a binary protocol")


def test_base64_messages_are_a_digit_and_base64_text():
    message = streams.encode(streams.V4_BASE64, streams.STDERR, b"\x00\xffx")
    assert message == "2AP94"
    assert streams.decode(streams.V4_BASE64, message) == (streams.STDERR, b"\x00\xffx")


def test_exit_status_is_the_kubelets():
    assert streams.exit_status(0) == {"metadata": {}, "status": "Success"}
    failed = streams.exit_status(3)
    assert failed["status"] == "Failure" and failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert streams.exit_status(-9)["details"]["causes"][0]["message"] == "137"  # killed: 128 + SIGKILL
    json.dumps(failed)


def test_port_forward_ports_and_their_prefix():
    assert streams.parse_ports(MultiDict([("ports", "80,8080"), ("ports", "53")])) == [80, 8080, 53]
    assert streams.parse_ports(MultiDict([("port", "443")])) == [443]
    for bad in ("0", "70000", "http", ""):
        with pytest.raises(ValueError, match="port"):
            streams.parse_ports(MultiDict([("ports", bad)]))
    with pytest.raises(ValueError, match='"ports" is required'):
        streams.parse_ports(MultiDict())
    assert streams.port_prefix(8080) == b"\x90\x1f"  # little-endian, as the kubelet writes it


def test_status_bodies():
    body = streams.status(400, "BadRequest", "no")
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == 400 and body["reason"] == "BadRequest"


def test_log_lines_round_trip_the_cri_format(tmp_path):
    log = tmp_path / "logs" / "ns_pod_uid.log"
    w = podlog.Writer(log)
    w.write("tcp 10.0.0.1:1234 -> :80 GET / HTTP/1.1")
    w.close()
    lines = podlog.read_lines(log)
    assert len(lines) == 1
    when, text = podlog.parse(lines[0])
    assert text == "tcp 10.0.0.1:1234 -> :80 GET / HTTP/1.1"
    assert abs(podlog.parse_time(when) - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(seconds=5)
    assert podlog.render(lines) == [text + "\n"]
    assert podlog.render(lines, timestamps=True) == [f"{when} {text}\n"]


def test_tail_and_since_select_the_last_lines():
    t = [f"2026-01-01T00:00:0{i}.123456789Z" for i in range(5)]
    lines = [podlog.cri_line(f"line {i}", t[i]) for i in range(5)]
    assert podlog.render(lines, tail=2) == ["line 3\n", "line 4\n"]
    assert podlog.render(lines, tail=0) == []
    since = podlog.parse_time("2026-01-01T00:00:02Z")
    assert podlog.render(lines, since=since) == ["line 2\n", "line 3\n", "line 4\n"]
    assert podlog.render(lines, since=since, tail=1) == ["line 4\n"]


def test_a_big_log_is_rotated_and_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(podlog, "MAX_BYTES", 200)
    log = tmp_path / "p.log"
    w = podlog.Writer(log)
    for i in range(10):
        w.write(f"connection {i}")
    w.close()
    assert log.with_name("p.log.1").exists()
    texts = [podlog.parse(line)[1] for line in podlog.read_lines(log)]
    assert texts == [f"connection {i}" for i in range(10)][-len(texts):] and len(texts) >= 3
    assert [podlog.parse(line)[1] for line in podlog.read_lines(log, tail=2)] == ["connection 8", "connection 9"]
    podlog.remove(log)
    assert not log.exists() and not log.with_name("p.log.1").exists()
