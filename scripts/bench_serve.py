"""Load and fault test of `seqlab serve` on loopback (``make bench-serve``), bounded in time.

    python scripts/bench_serve.py runs/conll2003-ce                 # 1, 8, 32 clients, 30 s each
    python scripts/bench_serve.py RUN --seconds 10 --clients 1,32   # shorter

1. Batch prediction's throughput on the same texts (CoNLL-2003 test sentences joined by spaces),
   in this process, as `seqlab predict` runs it: the figure serving is measured against.
2. The server in a process of its own; for each number of concurrent clients, every client
   sends one sentence a request, back to back, for ``--seconds``: requests/s, sentences/s,
   p50/p95/p99 latency, errors (must be 0), and the server's resident memory at the start and
   the end (``/proc``).
3. A burst of malformed and oversized requests mixed with good ones, 32 at a time: every bad one
   must get its 4xx, every good one its right answer (the entities `seqlab predict` gives).
4. A maximal request (64 texts of 10,000 characters, test sentences run together) while one
   client sends one sentence a request back to back: the small requests' p50/p99 latency
   during it, beside the same client's alone (step 2, 1 client), and the maximal one's time.
5. Abandoned requests: ``--abandon`` clients each send a large request (16 texts of 2,000
   characters) and hang up at once; the time until a small request is answered and until
   ``/health`` shows nothing waiting (recovery), and how many were dropped.
6. Slow and idle clients: ``--idle`` connections that send nothing and 20 that send half their
   headers; how many the server still holds (its open descriptors) after the header timeout.
7. A soak of ``--soak`` seconds with 8 clients: the server's resident memory every 10 s.

The clients run in this process (asyncio; a minimal HTTP/1.1 client for the load, httpx for the
burst) and share the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batch_throughput(run: str, texts: list[str], top_clients: int, repeats: int = 3
                     ) -> tuple[float, float, list]:
    """Sentences/s of batch prediction (2,048 lines at a time, as `seqlab predict`), and of
    random sets of ``top_clients`` sentences (the most a batch of the server can hold when each
    client sends one): medians of ``repeats``; with the predictions."""
    from seqlab.memory import fix_mmap_threshold
    from seqlab.assemble import load_run
    from seqlab.tasks import PredictOptions

    fix_mmap_threshold()  # as `seqlab predict` and `seqlab serve` run
    task, r = load_run(run)
    predictor = task.predictor(r, PredictOptions())
    rng = random.Random(0)
    sets = [rng.sample(texts, min(top_clients, len(texts))) for _ in range(60)]
    predictor.predict(sets[0])
    rates, set_rates, results = [], [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = [x for k in range(0, len(texts), 2048) for x in predictor.predict(texts[k: k + 2048])]
        rates.append(len(texts) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for one in sets:
            predictor.predict(one)
        set_rates.append(sum(map(len, sets)) / (time.perf_counter() - t0))
    return statistics.median(rates), statistics.median(set_rates), results


async def load(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` keep-alive connections, each sending one sentence a request back to back.

    A minimal HTTP/1.1 client on asyncio streams (requests encoded in advance, responses read
    by their Content-Length): the clients share the cores with the server, so they should cost
    as little as they can. Every response is checked to be a 200 with one result.
    """
    host, port = url.removeprefix("http://").split(":")
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    requests = [(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
    latencies, errors, done = [], 0, 0
    stop = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def client():
        nonlocal errors, done
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop:
                request = requests[next(counter) % len(requests)]
                t0 = time.perf_counter()
                ok = False
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    length = next(int(x.split(":", 1)[1]) for x in lines
                                  if x.lower().startswith("content-length:"))
                    body = await reader.readexactly(length)
                    ok = lines[0].split()[1] == "200" and len(json.loads(body)["results"]) == 1
                except (OSError, asyncio.IncompleteReadError, StopIteration, ValueError, KeyError):
                    reader, writer = await asyncio.open_connection(host, int(port))
                latencies.append(time.perf_counter() - t0)
                done += 1
                errors += not ok
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {"clients": clients, "requests": done, "requests_per_s": done / elapsed,
            "sentences_per_s": done / elapsed, "p50_ms": 1000 * q[49], "p95_ms": 1000 * q[94],
            "p99_ms": 1000 * q[98], "errors": errors}


BAD = [  # (body, content type, expected status)
    (b"{", 400), (b"\xff\xfe\x00", 400), (b'{"texts": "one text"}', 422), (b'{"texts": [1, 2]}', 422),
    (b"[]", 422), (b'{"text": ["a"]}', 422),
    (json.dumps({"texts": ["a"] * 65}).encode(), 413),
    (json.dumps({"texts": ["a" * 10_001]}).encode(), 413),
    (b'{"texts": ["' + b"a" * 1_100_000 + b'"]}', 413),
]


def same_entities(a: dict, b: dict, tol: float = 2e-4) -> bool:
    """The same entities (type and characters) with scores within ``tol``: a batch of other
    texts pads differently, which moves a score in its last float digits, and that may round
    its fourth decimal the other way (1 text in 1,200 of CoNLL-2003 test, measured)."""
    ea, eb = a["entities"], b["entities"]
    key = [(e["type"], e["start"], e["end"]) for e in ea]
    return a["text"] == b["text"] and key == [(e["type"], e["start"], e["end"]) for e in eb] \
        and all(abs(x.get("score", 0) - y.get("score", 0)) <= tol for x, y in zip(ea, eb))


async def faults(url: str, texts: list[str], expected: dict[str, dict], n: int = 400) -> dict:
    import httpx

    rng = random.Random(0)
    jobs = [("bad", *rng.choice(BAD)) if rng.random() < 0.5 else ("good", rng.choice(texts))
            for _ in range(n)]
    sem = asyncio.Semaphore(32)
    wrong, closed = [], []

    async def one(c, job):
        async with sem:
            if job[0] == "bad":
                body, status = job[1], job[2]
                try:
                    r = await c.post(url + "/predict", content=body,
                                     headers={"content-type": "application/json"}, timeout=120)
                except httpx.TransportError:
                    # the server answers a body declared over the limit at once and closes the
                    # connection: a client still uploading (httpx sends no Expect: 100-continue)
                    # may see the connection reset rather than the 413
                    if len(body) > 1_000_000:
                        closed.append(1)
                        return
                    raise
                if r.status_code != status or "error" not in r.json():
                    wrong.append((job[0], status, r.status_code))
            else:
                r = await c.post(url + "/predict", json={"texts": [job[1]]}, timeout=120)
                if r.status_code != 200 or not same_entities(r.json()["results"][0],
                                                             expected[job[1]]):
                    wrong.append((job[0], 200, r.status_code))

    async with httpx.AsyncClient() as c:
        await asyncio.gather(*[one(c, j) for j in jobs])
    return {"requests": n, "bad": sum(j[0] == "bad" for j in jobs),
            "good": sum(j[0] == "good" for j in jobs), "wrong": wrong,
            "oversized_reset_before_413": len(closed)}


def _long_texts(texts: list[str], chars: int, count: int) -> list[str]:
    """``count`` texts of ``chars`` characters: test sentences run together (then cut)."""
    out, k = [], 0
    for _ in range(count):
        parts, n = [], 0
        while n < chars:
            parts.append(texts[k % len(texts)])
            n += len(parts[-1]) + 1
            k += 1
        out.append(" ".join(parts)[:chars].rstrip())
    return out


async def small_during_big(url: str, texts: list[str]) -> dict:
    """One client's one-sentence requests, back to back, while a maximal request runs."""
    import httpx

    big = {"texts": _long_texts(texts, 10_000, 64)}
    latencies = []
    async with httpx.AsyncClient(timeout=600) as c:
        t0 = time.perf_counter()
        task = asyncio.ensure_future(c.post(url + "/predict", json=big))
        await asyncio.sleep(0.2)
        k = 0
        while not task.done():
            s0 = time.perf_counter()
            r = await c.post(url + "/predict", json={"texts": [texts[k % len(texts)]]})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - s0)
            k += 1
        r = await task
        big_s = time.perf_counter() - t0
    q = (statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1
         else [float("nan")] * 99)
    return {"big_status": r.status_code, "big_s": big_s, "small_requests": len(latencies),
            "small_p50_ms": 1000 * q[49], "small_p99_ms": 1000 * q[98],
            "small_max_ms": 1000 * max(latencies, default=float("nan"))}


def abandoned(url: str, texts: list[str], clients: int) -> dict:
    """``clients`` large requests whose clients hang up at once; the time to recover."""
    import httpx

    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"texts": _long_texts(texts, 2_000, 16)}).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    before = httpx.get(url + "/health").json()
    t0 = time.perf_counter()
    for _ in range(clients):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(head + body)
            time.sleep(0.01)
    r = httpx.post(url + "/predict", json={"texts": [texts[0]]}, timeout=600)
    answered = time.perf_counter() - t0
    while httpx.get(url + "/health").json()["waiting"] and time.perf_counter() - t0 < 600:
        time.sleep(0.05)
    after = httpx.get(url + "/health").json()
    return {"clients": clients, "small_status": r.status_code, "small_answered_s": answered,
            "recovered_s": time.perf_counter() - t0,
            "dropped": after["dropped"] - before["dropped"],
            "items_predicted": after["items"] - before["items"], "items_sent": 16 * clients}


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slow_clients(url: str, pid: int, idle: int, wait_s: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    base = open_descriptors(pid)
    socks = []
    for k in range(idle + 20):
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            continue
        if k >= idle:
            s.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\n".encode())
        socks.append(s)
    opened = len(socks)
    time.sleep(0.5)
    held_at_once = open_descriptors(pid) - base
    time.sleep(wait_s)
    held_after = open_descriptors(pid) - base
    for s in socks:
        s.close()
    return {"connections": idle + 20, "opened": opened, "held_at_once": held_at_once,
            "held_after_s": wait_s, "held_after": held_after}


def soak(url: str, texts: list[str], pid: int, seconds: float) -> dict:
    samples = [rss_mib(pid)]
    rows = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        rows.append(asyncio.run(load(url, texts, 8, min(10.0, end - time.perf_counter()))))
        samples.append(rss_mib(pid))
    return {"seconds": seconds, "rss_mib": samples, "requests": sum(r["requests"] for r in rows),
            "errors": sum(r["errors"] for r in rows)}


def main(argv=None) -> int:
    import httpx

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA"))
    p.add_argument("--abandon", type=int, default=50, help="abandoned large requests (step 5)")
    p.add_argument("--idle", type=int, default=1000, help="idle connections (step 6)")
    p.add_argument("--soak", type=float, default=120, help="seconds of the soak (step 7; 0: none)")
    p.add_argument("--server-args", default="", help="more `seqlab serve` options, e.g. "
                   "'--step-chars 1000000000' (one step a request: no interleaving)")
    p.add_argument("--output", help="write the figures as JSON here")
    args = p.parse_args(argv)
    from seqlab.data.registry import load_named

    texts = [" ".join(s.tokens) for s in load_named("conll2003", args.data_dir)[0]["test"]]
    print(f"{len(texts)} CoNLL-2003 test sentences; CPU {os.cpu_count()} cores", flush=True)
    top = max(int(c) for c in args.clients.split(","))
    batch_rate, set_rate, results = batch_throughput(args.run, texts, top)
    expected = {t: r for t, r in zip(texts, results)}
    print(f"batch prediction (seqlab predict's path): {batch_rate:.0f} sentences/s; random sets "
          f"of {top} sentences, in-process: {set_rate:.0f} sentences/s", flush=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(args.output).with_suffix(".log") if args.output else os.devnull, "w")
    server = subprocess.Popen([sys.executable, "-m", "seqlab.cli", "serve", args.run, "--port",
                               str(port), *args.server_args.split()], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True)
    import threading

    server_log: list[str] = []
    threading.Thread(target=lambda: [server_log.append(line) or log.write(line)
                                     for line in server.stderr], daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        rows = []
        for clients in (int(c) for c in args.clients.split(",")):
            start, before = rss_mib(server.pid), httpx.get(url + "/health").json()
            row = asyncio.run(load(url, texts, clients, args.seconds))
            after = httpx.get(url + "/health").json()
            row.update(rss_start_mib=start, rss_end_mib=rss_mib(server.pid),
                       mean_batch=(after["items"] - before["items"])
                       / max(after["batches"] - before["batches"], 1))
            rows.append(row)
            print(json.dumps(row), flush=True)
        burst = asyncio.run(faults(url, texts, expected))
        during = asyncio.run(small_during_big(url, texts))
        print(json.dumps({"small_during_big": during}), flush=True)
        gone = abandoned(url, texts, args.abandon)
        print(json.dumps({"abandoned": gone}), flush=True)
        slow = slow_clients(url, server.pid, args.idle, 11.0)
        print(json.dumps({"slow_clients": slow}), flush=True)
        soaked = soak(url, texts, server.pid, args.soak) if args.soak else None
        print(json.dumps({"soak": soaked}), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=120)
    time.sleep(0.5)
    log_tracebacks = sum("Traceback" in line for line in server_log)
    print("\n| clients | requests/s | sentences/s | p50 (ms) | p95 (ms) | p99 (ms) | errors | "
          "server RSS start -> end (MiB) | mean batch |\n|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests_per_s']:.1f} | {r['sentences_per_s']:.1f} | "
              f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | "
              f"{r['rss_start_mib']:.0f} -> {r['rss_end_mib']:.0f} | {r['mean_batch']:.1f} |")
    last = rows[-1]
    print(f"\nsentences/s at {last['clients']} clients against batch prediction: "
          f"{last['sentences_per_s']:.1f} / {batch_rate:.1f} = {last['sentences_per_s'] / batch_rate:.2f}x "
          f"(in-process sets of {top}: {set_rate:.1f})")
    print(f"fault burst: {burst['requests']} requests ({burst['bad']} malformed or oversized, "
          f"{burst['good']} good): {len(burst['wrong'])} answered wrongly {burst['wrong'][:5]}; "
          f"{burst['oversized_reset_before_413']} oversized uploads cut off by the early 413")
    alone = next((r for r in rows if r["clients"] == 1), rows[0])
    print(f"a maximal request (64 x 10,000 characters, status {during['big_status']}) took "
          f"{during['big_s']:.1f} s; one client's sentences meanwhile: p50 "
          f"{during['small_p50_ms']:.0f} ms, p99 {during['small_p99_ms']:.0f} ms, max "
          f"{during['small_max_ms']:.0f} ms over {during['small_requests']} requests (alone: p50 "
          f"{alone['p50_ms']:.0f} ms, p99 {alone['p99_ms']:.0f} ms)")
    print(f"{gone['clients']} abandoned requests: a small one answered after "
          f"{gone['small_answered_s']:.2f} s, nothing waiting after {gone['recovered_s']:.2f} s; "
          f"{gone['dropped']} dropped, {gone['items_predicted']} of {gone['items_sent']} texts "
          "predicted anyway")
    print(f"slow clients: {slow['connections']} connections ({slow['opened']} opened; 20 half "
          f"their headers), {slow['held_at_once']} held at once, {slow['held_after']} after "
          f"{slow['held_after_s']:.0f} s")
    if soaked:
        print(f"soak: {soaked['seconds']:.0f} s at 8 clients, {soaked['requests']} requests, "
              f"{soaked['errors']} errors; RSS (MiB) "
              + " -> ".join(f"{x:.0f}" for x in soaked["rss_mib"]))
    print(f"tracebacks in the server's log: {log_tracebacks}")
    if args.output:
        Path(args.output).write_text(json.dumps({"batch_sentences_per_s": batch_rate,
                                                 "set_size": top, "set_sentences_per_s": set_rate,
                                                 "load": rows, "burst": burst,
                                                 "small_during_big": during, "abandoned": gone,
                                                 "slow_clients": slow, "soak": soaked,
                                                 "log_tracebacks": log_tracebacks,
                                                 "server_args": args.server_args},
                                                indent=1) + "\n")
    return 0 if not burst["wrong"] and all(r["errors"] == 0 for r in rows) \
        and not log_tracebacks else 1


if __name__ == "__main__":
    sys.exit(main())
