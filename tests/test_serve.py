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
        from seqlab.tasks.ner_inference import NerPredictor

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


class CostlyPredictor(EchoPredictor):
    """An echo whose time grows with the characters of a batch, as a model's does."""

    def __init__(self, s_per_char: float):
        super().__init__()
        self.s_per_char, self.seen = s_per_char, []

    def predict(self, items):
        self.seen.append(list(items))
        time.sleep(self.s_per_char * sum(len(t) for t in items))
        return super().predict(items)


def _asgi_run(app, coroutine):
    async def run():
        async with app.router.lifespan_context(app):
            import httpx

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         timeout=60) as client:
                return await coroutine(client)

    return asyncio.run(run())


def test_a_small_request_is_not_held_behind_a_maximal_one():
    predictor = CostlyPredictor(2e-6)                     # 64 x 10,000 chars: 1.3 s in all
    app = _app(predictor, step_chars=20_000, batch_window_ms=1)
    big = {"texts": [("x" * 9_999 + str(k % 10)) for k in range(64)]}

    async def go(client):
        t0 = time.perf_counter()
        big_task = asyncio.ensure_future(client.post("/predict", json=big))
        await asyncio.sleep(0.1)                          # the big one is being predicted
        small = await client.post("/predict", json={"texts": ["Peter"]})
        small_done = time.perf_counter() - t0
        r = await big_task
        return small, small_done, r, time.perf_counter() - t0

    small, small_done, r, big_done = _asgi_run(app, go)
    assert small.status_code == 200 and small.json()["results"][0]["text"] == "Peter"
    assert r.status_code == 200 and [x["text"] for x in r.json()["results"]] == big["texts"]
    assert small_done < big_done / 2                      # answered long before the big one
    # steps hold at most step_chars (or one item), and the small text shared a step
    assert all(sum(map(len, b)) <= 20_000 or len(b) == 1 for b in predictor.seen)
    assert any("Peter" in b and len(b) > 1 for b in predictor.seen)


def test_a_request_past_its_deadline_is_a_504_and_its_work_is_dropped():
    predictor = CostlyPredictor(1e-4)                     # 1 s a 10,000-character text
    app = _app(predictor, step_chars=10_000, timeout=0.5, batch_window_ms=1)

    async def go(client):
        late = await client.post("/predict", json={"texts": ["x" * 10_000] * 8})
        await asyncio.sleep(1.2)                           # the step in flight ends
        health = (await client.get("/health")).json()
        fine = await client.post("/predict", json={"texts": ["ok"]})
        return late, health, fine

    late, health, fine = _asgi_run(app, go)
    assert late.status_code == 504 and "--timeout" in late.json()["error"]
    assert health["dropped"] == 1 and health["items"] < 8   # the rest was never predicted
    assert fine.status_code == 200


def test_a_full_queue_is_a_503_with_retry_after():
    predictor = CostlyPredictor(1e-4)
    app = _app(predictor, step_chars=10_000, max_queue_chars=25_000, batch_window_ms=1)

    async def go(client):
        first = asyncio.ensure_future(client.post("/predict", json={"texts": ["x" * 10_000] * 3}))
        await asyncio.sleep(0.2)
        refused = await client.post("/predict", json={"texts": ["y" * 10_000] * 2})
        return refused, await first

    refused, first = _asgi_run(app, go)
    assert refused.status_code == 503 and "busy" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1
    assert first.status_code == 200


@pytest.fixture
def echo_server(capfd):
    """The echo app behind uvicorn with the server's guarded protocol, in a thread."""
    import uvicorn

    from seqlab.serve import guarded_protocol

    def start(predictor, **opts):
        opts = ServeOptions(port=_free_port(), **opts)
        app = create_app(predictor, meta={"task": "ner", "head": "echo"}, name="echo",
                         backend="torch", opts=opts)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=opts.port,
                                               log_level="warning", http=guarded_protocol(opts),
                                               timeout_keep_alive=opts.keep_alive,
                                               limit_concurrency=opts.max_connections))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        started.append((server, thread))
        return opts.port

    started: list = []
    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_slow_and_idle_clients_are_cut_off_and_oversized_bodies_refused_unread(echo_server, capfd):
    port = echo_server(EchoPredictor(), header_timeout=0.5, keep_alive=0.5, max_connections=8,
                       max_body_bytes=1000, body_timeout=0.5)
    idle = socket.create_connection(("127.0.0.1", port))
    drip = socket.create_connection(("127.0.0.1", port))
    drip.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")   # and never the rest
    assert _closed_within(idle, 3) and _closed_within(drip, 3)
    # connections over the limit are closed at once
    import select

    many = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
    time.sleep(0.1)                                          # well inside the header timeout
    ready, _, _ = select.select(many, [], [], 0)
    assert len(ready) >= 4 and all(_closed_within(s, 0.1) for s in ready)
    for s in many:
        s.close()
    # a body declared too large is refused before a byte of it is sent
    big = socket.create_connection(("127.0.0.1", port))
    big.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n")
    big.settimeout(3)
    reply = b""
    while chunk := big.recv(4096):                          # the server closes the connection
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"at most 1000" in reply
    assert b"100 Continue" not in reply
    # a body that stalls: 408 after the body timeout, and the connection closed
    stall = socket.create_connection(("127.0.0.1", port))
    stall.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"te")
    stall.settimeout(5)
    reply = b""
    while chunk := stall.recv(4096):
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 408") and b"took over 0.5 s" in reply
    import httpx

    assert httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": ["fine"]}).status_code == 200
    assert "Traceback" not in capfd.readouterr().err


def test_work_for_a_client_that_left_is_dropped(echo_server, capfd):
    import httpx

    predictor = CostlyPredictor(1e-4)                       # 1 s a 10,000-character text
    port = echo_server(predictor, step_chars=10_000, batch_window_ms=1)
    body = json.dumps({"texts": ["x" * 10_000] * 6}).encode()
    for _ in range(3):                                      # three clients that give up at once
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.1)
        s.close()
    t0 = time.perf_counter()
    r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": ["quick"]}, timeout=30)
    waited = time.perf_counter() - t0
    health = httpx.get(f"http://127.0.0.1:{port}/health").json()
    assert r.status_code == 200 and waited < 2.5            # not behind 18 s of abandoned work
    assert health["dropped"] == 3 and health["items"] < 18
    assert "Traceback" not in capfd.readouterr().err


def test_serve_refuses_a_limit_that_is_not_positive_before_loading(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "no-such-run"), "--timeout", "0"]) == 2
    err = capsys.readouterr().err
    assert "--timeout must be positive, got 0" in err and "Traceback" not in err
