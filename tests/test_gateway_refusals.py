"""``voxpipe serve`` without a worker behind it: it starts, says so, and refuses clients in each API's own way.

A real broker and a real gateway process on free ports, no model: fast. What a
served client gets (and the bad-input cases beside a served client) is in
tests/test_gateway_clients.py.
"""

from __future__ import annotations

import socket

import pytest

from tests.procs import Pipeline, free_port

pytest.importorskip("starlette")


@pytest.fixture(scope="module")
def lone_gateway(tmp_path_factory):
    port, tcp = free_port(), free_port()
    with Pipeline(tmp_path_factory.mktemp("lone-gateway")) as p:
        p.start("gateway", ["serve", "--port", str(port), "--tcp", str(tcp), "--pool", "nobody"])
        hb = p.wait_ready("gateway")["gateway"]
        yield p, port, tcp, hb


def test_it_reports_its_endpoints_and_pool_in_its_heartbeat(lone_gateway):
    _, port, tcp, hb = lone_gateway
    assert hb.role == "gateway"
    assert hb.info["url"] == f"http://127.0.0.1:{port}" and hb.info["tcp_port"] == tcp
    assert hb.info["pool"] == "nobody" and hb.info["keys"] is False
    assert hb.counters["connections_active"] == 0


def test_without_a_worker_every_api_answers_service_unavailable_and_counts_it(lone_gateway):
    import httpx
    import openai
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    p, port, tcp, _ = lone_gateway
    health = httpx.get(f"http://127.0.0.1:{port}/health")
    assert health.status_code == 503 and health.json()["ready"] is False
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{port}/v1/listen?encoding=linear16&sample_rate=16000").close()
    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["dg-error"] == "no worker of pool 'nobody' is up"
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF" + bytes(100)))
    assert err.value.status_code == 503 and err.value.body["type"] == "server_error"
    with socket.create_connection(("127.0.0.1", tcp), timeout=5) as s:  # whisper_streaming: closed at once
        assert s.recv(100) == b""
    hb = p.wait_heartbeat("gateway", lambda h: h.counters.get("reject_no_worker", 0) >= 3)
    assert hb.counters["client_rejects"] >= 3


def test_a_bad_query_parameter_is_refused_before_any_worker_is_needed(lone_gateway):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    _, port, _, _ = lone_gateway
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{port}/v1/listen?encoding=linear16").close()
    assert refused.value.response.status_code == 400
    assert b"sample_rate is required" in refused.value.response.body


def test_deepgrams_pre_recorded_endpoint_refuses_in_deepgrams_shape_what_it_cannot_serve(lone_gateway):
    import httpx

    _, port, _, _ = lone_gateway
    url = f"http://127.0.0.1:{port}/v1/listen"
    audio = {"content": b"RIFF" + bytes(100), "headers": {"content-type": "audio/wav"}}
    cases = [  # (what is sent, status, words of the message): the bad request first, the missing worker last
        (httpx.post(url, json={"url": "https://example.com/a.wav"}), 400, "URL source is not supported"),
        (httpx.post(url + "?callback=https://example.com/hook", **audio), 400, "callback is not supported"),
        (httpx.post(url + "?utt_split=soon", **audio), 400, "utt_split"),
        (httpx.post(url, content=b""), 400, "no audio"),
        (httpx.post(url, **audio), 503, "no worker of pool 'nobody' is up"),
    ]
    for r, status, says in cases:
        body = r.json()
        assert r.status_code == status and says in body["err_msg"], (status, body)
        assert set(body) == {"err_code", "err_msg", "request_id"} and r.headers["dg-request-id"] == body["request_id"]


def test_binding_beyond_loopback_needs_a_key(voxpipe_cli):
    r = voxpipe_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert r.returncode == 3, r.stderr
    assert "gateway.host: 0.0.0.0 binds beyond loopback: set gateway.api_keys" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
