"""``seqlab serve RUN``: a trained run behind an HTTP API (Starlette on uvicorn), with a page.

* ``POST /predict``: NER ``{"texts": [...]}`` -> ``{"results": [{"text", "entities"}, ...]}``, the
  entities ``seqlab predict`` gives; QA ``{"question", "context"}`` -> the answer.
* ``GET /health``: the model, task, head and backend, and the requests waiting.
* ``GET /``: a page to type or paste text and see the entities (or the answer) highlighted;
  nested entities are drawn inside their outer one (outlined), with a legend of the types.

**Dynamic batching.** Requests wait in a queue; a batcher takes what has arrived within
``--batch-window-ms`` of the first (up to ``--max-batch`` items), predicts it as one batch in
a worker thread (batched by length there), and answers each request with its own results. Under
load, throughput approaches batch prediction's; alone, a request waits the window at most.

**Interleaving.** A request is predicted in steps of at most ``--step-chars`` characters,
and each step takes items round-robin from every request waiting, so a small request is
answered within about two steps even while a maximal one (64 texts of 10,000 characters) is
being predicted (docs/benchmarks.md measures it). A request still unanswered after
``--timeout`` seconds is a 504, and a request whose client has gone is dropped; neither's
remaining items are predicted.

**Limits**, each a clear 4xx with ``{"error": ...}``: a body over ``--max-body-bytes`` (413,
before it is read where it declares its length; the connection is closed), a body not received
within ``--body-timeout`` (408), not UTF-8 or not JSON (400, as are ``NaN``, unpaired surrogates
and nesting too deep), the wrong fields or types (422), more than ``--max-texts`` texts or a
text over ``--max-chars`` characters (413). More than ``--max-queue-chars`` characters waiting:
503 with ``Retry-After``. A connection whose request headers have not arrived within
``--header-timeout`` is closed, an idle keep-alive one after ``--keep-alive``, and one over
``--max-connections`` at once. A failure inside the model is a 500 with its message, and the
server goes on serving. SIGTERM (or Ctrl-C) stops accepting connections and finishes the
requests in flight before exiting.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import SeqlabError
from .memory import fix_mmap_threshold
from .assemble import load_run
from .tasks import Limits, PredictOptions, RequestError


@dataclass
class ServeOptions:
    backend: str = "torch"
    threads: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    batch_window_ms: float = 5.0
    max_texts: int = 64
    max_chars: int = 10_000
    max_body_bytes: int = 1_000_000
    step_chars: int = 8_000           # characters predicted in one step at most (interleaving)
    timeout: float = 60.0             # seconds a request may take, queued and predicted (504)
    max_queue_chars: int = 4_000_000  # characters waiting at most; beyond, 503 + Retry-After
    body_timeout: float = 10.0        # seconds to receive a request body (408)
    header_timeout: float = 10.0      # seconds to receive a request's headers (connection closed)
    keep_alive: float = 5.0           # seconds an idle keep-alive connection is kept
    max_connections: int = 256        # open connections at most (more are closed at once)


def _cost(item) -> int:
    """An item's size in characters (a text, or a question and its context)."""
    if isinstance(item, str):
        return max(len(item), 1)
    if isinstance(item, dict):
        return sum(_cost(v) for v in item.values()) or 1
    if isinstance(item, (list, tuple)):
        return sum(_cost(v) for v in item) or 1
    return 1


class Busy(Exception):
    """The queue is full: the request is refused (503) with a time to retry after."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy ({retry_after} s of work queued); retry later")
        self.retry_after = retry_after


class _Job:
    """One request's items, predicted in steps; ``future`` gets the results in order."""

    def __init__(self, items: list, future):
        self.items, self.future = items, future
        self.costs = [_cost(i) for i in items]
        self.results: list = [None] * len(items)
        self.next = self.done = 0

    @property
    def left(self) -> int:
        return sum(self.costs[self.next:])

    @property
    def dropped(self) -> bool:
        return self.future.done()


class Batcher:
    """The items of concurrent requests predicted together, in one worker thread, in steps that
    interleave requests: each step takes items round-robin from every request waiting (a small
    request's items join the next step even while a maximal request is being predicted), up to
    ``max_batch`` items and ``step_chars`` characters. A request whose future is done (its
    deadline passed, its client left) is dropped from the steps to come."""

    def __init__(self, predictor, max_batch: int, window_s: float, *, step_chars: int = 8_000,
                 max_queue_chars: int = 4_000_000):
        self.predictor, self.max_batch, self.window = predictor, max_batch, window_s
        self.step_chars, self.max_queue_chars = step_chars, max_queue_chars
        self.jobs: list[_Job] = []
        self.turn = 0
        self.arrived = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqlab-predict")
        self.task: asyncio.Task | None = None
        self.batches = self.items = self.dropped = 0  # so far (/health)
        self.chars_per_s = 0.0                         # measured throughput (Retry-After)

    @property
    def queue_chars(self) -> int:
        return sum(j.left for j in self.jobs if not j.dropped)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self.idle.wait()
        if self.task is not None:
            self.task.cancel()
        self.worker.shutdown(wait=True)

    def enqueue(self, items: list):
        """Queue a request's items; a future of their results. Raises :class:`Busy` when the
        queue would hold more than ``max_queue_chars``."""
        future = asyncio.get_running_loop().create_future()
        if not items:
            future.set_result([])
            return future
        job = _Job(items, future)
        queued = self.queue_chars
        if queued and queued + sum(job.costs) > self.max_queue_chars:
            rate = self.chars_per_s or 10_000.0
            raise Busy(max(1, round(queued / rate)))
        self.jobs.append(job)
        self.idle.clear()
        self.arrived.set()
        return future

    async def submit(self, items: list) -> list:
        return await self.enqueue(items)

    def _step(self) -> list[tuple[_Job, int]]:
        """The next step's (job, item index) pairs, round-robin over the jobs from ``turn``."""
        self.jobs = [j for j in self.jobs if not j.dropped and j.next < len(j.items)]
        taken: list[tuple[_Job, int]] = []
        chars = 0
        while self.jobs and len(taken) < self.max_batch:
            progressed = False
            for k in range(len(self.jobs)):
                job = self.jobs[(self.turn + k) % len(self.jobs)]
                if job.next >= len(job.items) or len(taken) >= self.max_batch:
                    continue
                cost = job.costs[job.next]
                if taken and chars + cost > self.step_chars:
                    continue
                taken.append((job, job.next))
                job.next += 1
                chars += cost
                progressed = True
            if not progressed:
                break
        self.turn += 1
        return taken

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.jobs = [j for j in self.jobs if not j.dropped and j.next < len(j.items)]
            if not self.jobs:
                self.idle.set()
                self.arrived.clear()
                await self.arrived.wait()
            # dynamic batching: less than a batch waiting waits the window for company (the
            # clients just answered send their next requests meanwhile)
            if sum(len(j.items) - j.next for j in self.jobs) < self.max_batch:
                await asyncio.sleep(self.window)
            taken = self._step()
            if not taken:
                continue
            items = [job.items[i] for job, i in taken]
            self.batches += 1
            self.items += len(items)
            started = loop.time()
            try:
                results = await loop.run_in_executor(self.worker, self.predictor.predict, items)
            except Exception as exc:  # noqa: BLE001 - the requests get the error, the server lives
                for job in {id(j): j for j, _ in taken}.values():
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            took = loop.time() - started
            chars = sum(job.costs[i] for job, i in taken)
            if took > 0:
                rate = chars / took
                self.chars_per_s = rate if not self.chars_per_s else 0.8 * self.chars_per_s + 0.2 * rate
            for (job, i), result in zip(taken, results):
                job.results[i] = result
                job.done += 1
                if job.done == len(job.items) and not job.future.done():
                    job.future.set_result(job.results)

    def drop(self, future) -> None:
        """A request given up (deadline, disconnect): its remaining items are not predicted."""
        if not future.done():
            future.cancel()
            self.dropped += 1


def _error(status: int, message: str, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


# answers after which the connection is closed: the rest of the body is never read
_CLOSE = {413, 408}


async def _read_body(request, limit: int, timeout: float) -> bytes:
    """The body, refused before it is read where its declared length is over ``limit`` (a
    client that sends ``Expect: 100-continue`` uploads nothing), else as soon as it passes
    ``limit``; a body not received within ``timeout`` seconds is a 408."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestError(413, f"the body has {int(length)} bytes; at most {limit}")
    body = bytearray()

    async def read():
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise RequestError(413, f"the body is over {limit} bytes")

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise RequestError(408, f"the body took over {timeout:g} s to arrive") from None
    return bytes(body)


async def _disconnected(request) -> None:
    """Returns when the client of ``request`` (its body read) has gone."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _no_constant(name: str):
    raise RequestError(400, f"the body is not JSON: {name} is not a JSON number")


def _surrogate(value, where: str = "the body") -> str | None:
    """Where a string of ``value`` holds an unpaired surrogate (``"\\ud800"``, which JSON can
    escape but no text encodes), or None."""
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"{at} holds an unpaired surrogate (U+{ord(v[exc.start]):04X} at " \
                       f"character {exc.start})"
        elif isinstance(v, dict):
            stack += [(x, f"{at}.{k}") for k, x in v.items()]
        elif isinstance(v, list):
            stack += [(x, f"{at}[{i}]") for i, x in enumerate(v)]
    return None


def parse_json(text: str):
    """A request body as JSON, or a :class:`RequestError` (400) naming what is wrong: not JSON,
    ``NaN``/``Infinity`` literals, nesting too deep for the parser, an unpaired surrogate."""
    try:
        payload = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"the body is not JSON: {exc.msg} at line {exc.lineno} "
                                f"column {exc.colno}") from None
    except RecursionError:
        raise RequestError(400, "the body is nested too deeply to parse") from None
    problem = _surrogate(payload, "body")
    if problem:
        raise RequestError(400, f"the body is not text: {problem}")
    return payload


def create_app(predictor, *, meta: dict, name: str, backend: str, opts: ServeOptions):
    """The ASGI app around a loaded predictor (see the module docstring)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    limits = Limits(max_texts=opts.max_texts, max_chars=opts.max_chars)
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        batcher = Batcher(predictor, opts.max_batch, opts.batch_window_ms / 1000,
                          step_chars=opts.step_chars, max_queue_chars=opts.max_queue_chars)
        batcher.start()
        state["batcher"] = app.state.batcher = batcher
        yield
        await batcher.stop()

    async def predict(request):
        arrived = asyncio.get_running_loop().time()
        try:
            body = await _read_body(request, opts.max_body_bytes, opts.body_timeout)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RequestError(400, f"the body is not UTF-8 (byte 0x{body[exc.start]:02x} "
                                        f"at offset {exc.start})") from None
            payload = parse_json(text)
            items = predictor.parse(payload, limits)
        except RequestError as exc:
            return _error(exc.status, str(exc),
                          {"connection": "close"} if exc.status in _CLOSE else None)
        except ClientDisconnect:  # the client left mid-body: nobody to answer, one line said
            print(f"seqlab serve: a client disconnected before its body was read "
                  f"({request.client.host if request.client else '?'})", file=sys.stderr)
            return _error(400, "the client disconnected")
        batcher = state["batcher"]
        try:
            future = batcher.enqueue(items)
        except Busy as exc:
            return _error(503, str(exc), {"retry-after": str(exc.retry_after)})
        left = opts.timeout - (asyncio.get_running_loop().time() - arrived)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({future, gone}, timeout=max(left, 0),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if future not in done:
            batcher.drop(future)
            if gone in done:  # nobody to answer; the work is dropped
                return _error(499, "the client disconnected")
            return _error(504, f"the request took over {opts.timeout:g} s (--timeout); send "
                               "fewer or shorter texts, or retry when the server is less busy")
        try:
            results = future.result()
        except Exception as exc:  # noqa: BLE001 - a model failure: said, and the server lives
            return _error(500, f"prediction failed: {type(exc).__name__}: {exc}")
        return JSONResponse(predictor.respond(results))

    async def health(request):
        batcher = state.get("batcher")
        return JSONResponse({"status": "ok", "model": name, "task": meta.get("task"),
                             "head": meta.get("head"), "backend": backend,
                             "form": predictor.form,
                             "waiting": len(batcher.jobs) if batcher else 0,
                             "queued_chars": batcher.queue_chars if batcher else 0,
                             "batches": batcher.batches if batcher else 0,
                             "items": batcher.items if batcher else 0,
                             "dropped": batcher.dropped if batcher else 0,
                             "limits": {"max_texts": opts.max_texts, "max_chars": opts.max_chars,
                                        "max_body_bytes": opts.max_body_bytes,
                                        "timeout_s": opts.timeout,
                                        "max_queue_chars": opts.max_queue_chars}})

    async def page(request):
        return HTMLResponse(PAGE.replace("{{name}}", name).replace("{{form}}", predictor.form))

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                             Route("/health", health), Route("/", page)], lifespan=lifespan)


def guarded_protocol(opts: ServeOptions):
    """uvicorn's h11 protocol with what it lacks against slow and idle clients: a connection
    whose request headers have not all arrived ``header_timeout`` seconds after it opened (or
    after its last answer) is closed, and one over ``max_connections`` is closed at once."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > opts.max_connections:
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
            self.header_timer = self.loop.call_later(opts.header_timeout, self._headers_overdue)

        def _headers_overdue(self) -> None:
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol


def serve(model_dir: str, opts: ServeOptions) -> int:
    """Load the run and serve it until SIGTERM or Ctrl-C."""
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise SeqlabError(f"seqlab serve needs {', '.join(missing)}: pip install 'seqlab[serve]'")
    for name in ("max_batch", "max_texts", "max_chars", "max_body_bytes", "step_chars", "timeout",
                 "max_queue_chars", "body_timeout", "header_timeout", "keep_alive",
                 "max_connections"):
        if not getattr(opts, name) > 0:  # before the model is loaded
            raise SeqlabError(f"seqlab serve: --{name.replace('_', '-')} must be positive, got "
                              f"{getattr(opts, name)}")
    fix_mmap_threshold()  # resident memory flat over many batch shapes (seqlab.memory)
    task, run = load_run(model_dir)
    predictor = task.predictor(run, PredictOptions(backend=opts.backend, threads=opts.threads,
                                                   batch_size=opts.max_batch))
    app = create_app(predictor, meta=run.meta, name=Path(model_dir).resolve().name,
                     backend=opts.backend, opts=opts)
    import uvicorn

    print(f"serving {model_dir} on http://{opts.host}:{opts.port} (POST /predict, GET /health, "
          "GET / for the page)", file=sys.stderr, flush=True)
    # uvicorn finishes the requests in flight on SIGTERM or SIGINT, then raises the signal
    # again for the handler it found: a no-op one makes a clean shutdown exit with status 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(uvicorn.Config(app, host=opts.host, port=opts.port, log_level="warning",
                                  http=guarded_protocol(opts), timeout_keep_alive=opts.keep_alive,
                                  limit_concurrency=opts.max_connections,
                                  timeout_graceful_shutdown=60)).run()
    print("seqlab serve: stopped", file=sys.stderr)
    return 0


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>seqlab: {{name}}</title>
<style>
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:860px;margin:30px auto;color:#222;padding:0 16px}
h1{font-size:20px}textarea,input{width:100%;font:inherit;box-sizing:border-box;padding:6px}
button{font:inherit;padding:6px 16px;margin:8px 0;cursor:pointer}
.out p{border:1px solid #e4e4e4;border-radius:6px;padding:8px 10px}
mark{border-radius:3px;padding:0 2px;border-bottom:2px solid var(--c);background:color-mix(in srgb,var(--c) 22%,white);color:inherit}
mark mark{background:white;border:1.5px solid var(--c);padding:0 1px}
mark sub{color:var(--c);font-size:10px;font-weight:600;margin-left:2px}.err{color:#b00}
.legend{font-size:13px;color:#555;margin-top:6px}.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;background:var(--c);margin-right:4px}
.note{font-size:13px;color:#8a5300}
</style></head><body><h1>seqlab: {{name}}</h1>
<form id="f" data-form="{{form}}">
<div id="question-row" hidden><label>question <input id="question" name="question"></label></div>
<label><span id="what">one text a line</span><textarea id="text" name="text" rows="6"></textarea></label>
<button id="go" type="submit">predict</button></form><div class="out" id="out"></div>
<script>
const palette=["#e6550d","#3182bd","#31a354","#756bb1","#d6616b","#8c6d31","#17becf","#bcbd22"];
const colors={};function color(t){if(!(t in colors))colors[t]=palette[Object.keys(colors).length%palette.length];return colors[t];}
function esc(s){return s.replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));}
function tree(ents){const roots=[],stack=[],crossing=[];
  for(const e of [...ents].sort((a,b)=>a.start-b.start||b.end-a.end)){
    while(stack.length&&stack[stack.length-1].end<=e.start)stack.pop();
    const top=stack[stack.length-1];
    if(top&&e.end>top.end){crossing.push(e);continue;}
    const node={...e,kids:[]};(top?top.kids:roots).push(node);stack.push(node);}
  return {roots,crossing};}
function html(text,nodes,from,to,depth){let out="",pos=from;
  for(const n of nodes){out+=esc(text.slice(pos,n.start))+'<mark class="ent" data-type="'+esc(n.type)+'" data-depth="'+depth+'" style="--c:'+color(n.type)+'">'
    +html(text,n.kids,n.start,n.end,depth+1)+"<sub>"+esc(n.type)+"</sub></mark>";pos=n.end;}
  return out+esc(text.slice(pos,to));}
function marked(text,ents){const t=tree(ents);let out=html(text,t.roots,0,text.length,0);
  if(t.crossing.length)out+='<br><span class="note">overlapping, not drawn: '+t.crossing.map(e=>esc(e.type)+" \u201c"+esc(text.slice(e.start,e.end))+"\u201d").join(", ")+"</span>";
  return out;}
function fields(x){return Object.entries(x).map(([k,v])=>'<b>'+esc(k)+"</b> "+esc(typeof v==="string"?v:JSON.stringify(v))).join(" \u00b7 ");}
function legend(results){const types=[...new Set(results.flatMap(r=>(r.entities||[]).map(e=>e.type)))];
  if(!types.length)return "";
  const nested=results.some(r=>tree(r.entities||[]).roots.some(function deep(n){return n.kids.length>0||n.kids.some(deep);}));
  return '<div class="legend">'+types.map(t=>'<span style="--c:'+color(t)+'"><i></i>'+esc(t)+"</span>").join("")
    +(nested?'<span id="nested-note">outlined: an entity inside another</span>':"")+"</div>";}
const form=document.getElementById("f"), asks=form.dataset.form==="question";
if(asks){document.getElementById("question-row").hidden=false;document.getElementById("what").textContent="context";}
form.addEventListener("submit",async ev=>{ev.preventDefault();const out=document.getElementById("out");
  const text=document.getElementById("text").value;
  const body=asks?{question:document.getElementById("question").value,context:text}:{texts:text.split("\\n").filter(t=>t.trim())};
  out.innerHTML="…";
  const r=await fetch("predict",{method:"POST",headers:{"content-type":"application/json"},body:JSON.stringify(body)});
  const j=await r.json();
  if(!r.ok){out.innerHTML='<p class="err">'+esc(j.error||String(r.status))+"</p>";return;}
  out.innerHTML=asks?"<p>"+(j.start===null?"(no answer)":marked(text,[{start:j.start,end:j.end,type:"answer"}]))+"</p>"
    :j.results.map(x=>'<p class="result">'+(Array.isArray(x.entities)?marked(x.text,x.entities):fields(x))+"</p>").join("")+legend(j.results);});
</script></body></html>
"""
