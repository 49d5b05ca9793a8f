"""`seqlab serve`: the API and its limits, dynamic batching, a model failure, a clean
shutdown, and the same entities as `seqlab predict`."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from seqlab.cli import main  # noqa: E402
from seqlab.serve import ServeOptions, create_app  # noqa: E402
from seqlab.tasks import Predictor  # noqa: E402

ROOT = Path(__file__).parents[1]


class EchoPredictor(Predictor):
    """A model-free predictor: each text's length as its one entity; fails on "boom"."""

    def __init__(self, delay: float = 0.0):
        self.batches, self.delay = [], delay

    def parse(self, payload, limits):
        from seqlab.tasks.ner import NerPredictor

        return NerPredictor.parse(self, payload, limits)

    def predict(self, items):
        self.batches.append(len(items))
        time.sleep(self.delay)
        if "boom" in items:
            raise RuntimeError("the model fell over")
        return [{"text": t, "entities": [{"type": "LEN", "start": 0, "end": len(t)}]} for t in items]

    def respond(self, results):
        return {"results": results}


def _app(predictor, **opts):
    return create_app(predictor, meta={"task": "ner", "head": "echo"}, name="echo",
                      backend="torch", opts=ServeOptions(**opts))


def test_limits_are_clear_4xx_answers():
    from starlette.testclient import TestClient

    with TestClient(_app(EchoPredictor(), max_texts=2, max_chars=5, max_body_bytes=100)) as c:
        ok = c.post("/predict", json={"texts": ["abc", "de"]})
        assert ok.status_code == 200 and [r["entities"][0]["end"] for r in ok.json()["results"]] == [3, 2]
        cases = [(b"{", 400, "not JSON"), (b"\xff", 400, "not UTF-8"),
                 (b'{"texts": "abc"}', 422, '"texts" must be a list of strings'),
                 (b'{"texts": [1]}', 422, "list of strings"), (b'[]', 422, "expected a JSON object"),
                 (b'{"text": ["a"]}', 422, "expected a JSON object"),
                 (b'{"texts": ["a", "b", "c"]}', 413, "3 texts in one request; at most 2"),
                 (b'{"texts": ["abcdefg"]}', 413, "text 0 has 7 characters; at most 5"),
                 (b'{"texts": ["' + b"a" * 200 + b'"]}', 413, "at most 100")]
        for body, status, message in cases:
            r = c.post("/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == status and message in r.json()["error"], body
        assert c.post("/predict", json={"texts": []}).json() == {"results": []}
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["limits"]["max_texts"] == 2
        assert "<form" in c.get("/").text


def test_pathological_json_is_a_4xx_json_error():
    from starlette.testclient import TestClient

    with TestClient(_app(EchoPredictor())) as c:
        cases = [(b'{"texts": ["Peter \\ud800 Paris"]}', "unpaired surrogate (U+D800"),
                 (b'{"texts": NaN}', "NaN is not a JSON number"),
                 (b'{"texts": [Infinity]}', "Infinity is not a JSON number"),
                 (b"[" * 100_000 + b"]" * 100_000, "nested too deeply")]
        for body, message in cases:
            r = c.post("/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and message in r.json()["error"], (body[:40], r.text[:200])
        # a paired surrogate escape is a real character and fine
        ok = c.post("/predict", content=b'{"texts": ["smile \\ud83d\\ude00"]}')
        assert ok.status_code == 200 and ok.json()["results"][0]["text"] == "smile \U0001F600"


def test_a_model_failure_is_a_500_and_the_server_goes_on():
    from starlette.testclient import TestClient

    with TestClient(_app(EchoPredictor())) as c:
        r = c.post("/predict", json={"texts": ["boom"]})
        assert r.status_code == 500 and "the model fell over" in r.json()["error"]
        assert c.post("/predict", json={"texts": ["fine"]}).status_code == 200


def test_concurrent_requests_are_batched():
    import httpx

    predictor = EchoPredictor(delay=0.05)
    app = _app(predictor, max_batch=16, batch_window_ms=30)

    async def run():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                replies = await asyncio.gather(*[client.post("/predict", json={"texts": [f"t{k}"]})
                                                 for k in range(12)])
                health = (await client.get("/health")).json()
        return replies, health

    replies, health = asyncio.run(run())
    assert all(r.status_code == 200 for r in replies)
    # each request got its own text back, and they were predicted together
    assert [r.json()["results"][0]["text"] for r in replies] == [f"t{k}" for k in range(12)]
    assert sum(predictor.batches) == 12 and max(predictor.batches) > 1
    assert (health["items"], health["batches"]) == (12, len(predictor.batches))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, *extra: str):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "seqlab.cli", "serve", str(run), "--port",
                             str(port), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    import httpx

    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
    proc.kill()
    raise AssertionError("the server did not start")


@pytest.mark.slow
def test_the_server_gives_predicts_entities_and_finishes_on_sigterm(served_run, tmp_path, capsys):
    import httpx

    texts = ["Peter Blackburn visited Germany .", "EU rejects German call to boycott British lamb .",
             "", "Bonn"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(served_run), str(src), "--output", str(out)]) == 0
    expected = [json.loads(l) for l in out.read_text().splitlines()]
    proc, url = start_server(served_run)
    try:
        got = httpx.post(f"{url}/predict", json={"texts": texts}, timeout=60).json()["results"]
        assert got == expected
        # a long request in flight when SIGTERM arrives is answered before the server exits
        answer = {}

        def long_request():
            answer["r"] = httpx.post(f"{url}/predict", json={"texts": texts * 16}, timeout=60)

        t = threading.Thread(target=long_request)
        t.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        t.join(timeout=60)
        assert answer["r"].status_code == 200 and len(answer["r"].json()["results"]) == 64
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_client_that_disconnects_mid_body_is_one_log_line(capsys):
    app = _app(EchoPredictor())
    sent = []
    messages = iter([{"type": "http.request", "body": b'{"texts": ["ab', "more_body": True},
                     {"type": "http.disconnect"}])

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "app": app}
    asyncio.run(app(scope, receive, send))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disconnected before its body was read" in err
    assert "Traceback" not in err
