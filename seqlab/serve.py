"""``seqlab serve RUN``: a trained run behind an HTTP API (Starlette on uvicorn), with a page.

* ``POST /predict``: NER ``{"texts": [...]}`` -> ``{"results": [{"text", "entities"}, ...]}``, the
  entities ``seqlab predict`` gives; QA ``{"question", "context"}`` -> the answer.
* ``GET /health``: the model, task, head and backend, and the requests waiting.
* ``GET /``: a page to type or paste text and see the entities (or the answer) highlighted.

**Dynamic batching.** Requests wait in a queue; a batcher takes what has arrived within
``--batch-window-ms`` of the first (up to ``--max-batch`` items), predicts it as one batch in
a worker thread (batched by length there), and answers each request with its own results. Under
load, throughput approaches batch prediction's; alone, a request waits the window at most.

**Limits**, each a clear 4xx with ``{"error": ...}``: a body over ``--max-body-bytes`` (413),
not UTF-8 or not JSON (400), the wrong fields or types (422), more than ``--max-texts`` texts or a
text over ``--max-chars`` characters (413). A failure inside the model is a 500 with its message,
and the server goes on serving. SIGTERM (or Ctrl-C) stops accepting connections and finishes the
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
from .tasks import Limits, PredictOptions, RequestError, load_run


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


class Batcher:
    """Items of concurrent requests predicted together, in one worker thread."""

    def __init__(self, predictor, max_batch: int, window_s: float):
        self.predictor, self.max_batch, self.window = predictor, max_batch, window_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqlab-predict")
        self.task: asyncio.Task | None = None
        self.batches = self.items = 0  # predicted so far (/health: the mean batch size)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self.queue.join()
        if self.task is not None:
            self.task.cancel()
        self.worker.shutdown(wait=True)

    async def submit(self, items: list) -> list:
        if not items:
            return []
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            pending = [first]
            count = len(first[0])
            deadline = loop.time() + self.window
            while count < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                pending.append(nxt)
                count += len(nxt[0])
            items = [item for its, _ in pending for item in its]
            self.batches += 1
            self.items += len(items)
            try:
                results = await loop.run_in_executor(self.worker, self.predictor.predict, items)
            except Exception as exc:  # noqa: BLE001 - the requests get the error, the server lives
                for _, fut in pending:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                k = 0
                for its, fut in pending:
                    if not fut.done():
                        fut.set_result(results[k: k + len(its)])
                    k += len(its)
            for _ in pending:
                self.queue.task_done()


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestError(413, f"the body has {int(length)} bytes; at most {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"the body is over {limit} bytes")
    return bytes(body)


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
        batcher = Batcher(predictor, opts.max_batch, opts.batch_window_ms / 1000)
        batcher.start()
        state["batcher"] = app.state.batcher = batcher
        yield
        await batcher.stop()

    async def predict(request):
        try:
            body = await _read_body(request, opts.max_body_bytes)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RequestError(400, f"the body is not UTF-8 (byte 0x{body[exc.start]:02x} "
                                        f"at offset {exc.start})") from None
            payload = parse_json(text)
            items = predictor.parse(payload, limits)
        except RequestError as exc:
            return _error(exc.status, str(exc))
        except ClientDisconnect:  # the client left mid-body: nobody to answer, one line said
            print(f"seqlab serve: a client disconnected before its body was read "
                  f"({request.client.host if request.client else '?'})", file=sys.stderr)
            return _error(400, "the client disconnected")
        try:
            results = await state["batcher"].submit(items)
        except Exception as exc:  # noqa: BLE001 - a model failure: said, and the server lives
            return _error(500, f"prediction failed: {type(exc).__name__}: {exc}")
        return JSONResponse(predictor.respond(results))

    async def health(request):
        batcher = state.get("batcher")
        return JSONResponse({"status": "ok", "model": name, "task": meta.get("task"),
                             "head": meta.get("head"), "backend": backend,
                             "form": predictor.form, "waiting": batcher.queue.qsize() if batcher else 0,
                             "batches": batcher.batches if batcher else 0,
                             "items": batcher.items if batcher else 0,
                             "limits": {"max_texts": opts.max_texts, "max_chars": opts.max_chars,
                                        "max_body_bytes": opts.max_body_bytes}})

    async def page(request):
        return HTMLResponse(PAGE.replace("{{name}}", name).replace("{{form}}", predictor.form))

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                             Route("/health", health), Route("/", page)], lifespan=lifespan)


def serve(model_dir: str, opts: ServeOptions) -> int:
    """Load the run and serve it until SIGTERM or Ctrl-C."""
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise SeqlabError(f"seqlab serve needs {', '.join(missing)}: pip install 'seqlab[serve]'")
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
                                  timeout_graceful_shutdown=60)).run()
    print("seqlab serve: stopped", file=sys.stderr)
    return 0


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>seqlab: {{name}}</title>
<style>
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:860px;margin:30px auto;color:#222;padding:0 16px}
h1{font-size:20px}textarea,input{width:100%;font:inherit;box-sizing:border-box;padding:6px}
button{font:inherit;padding:6px 16px;margin:8px 0;cursor:pointer}
.out p{border:1px solid #e4e4e4;border-radius:6px;padding:8px 10px}
mark{border-radius:3px;padding:0 2px;border-bottom:2px solid var(--c);background:color-mix(in srgb,var(--c) 22%,white)}
mark sub{color:var(--c);font-size:10px;font-weight:600;margin-left:2px}.err{color:#b00}
</style></head><body><h1>seqlab: {{name}}</h1>
<form id="f" data-form="{{form}}">
<div id="qa" hidden><label>question <input id="question" name="question"></label></div>
<label><span id="what">one text a line</span><textarea id="text" name="text" rows="6"></textarea></label>
<button id="go" type="submit">predict</button></form><div class="out" id="out"></div>
<script>
const palette=["#e6550d","#3182bd","#31a354","#756bb1","#d6616b","#8c6d31","#17becf","#bcbd22"];
const colors={};function color(t){if(!(t in colors))colors[t]=palette[Object.keys(colors).length%palette.length];return colors[t];}
function esc(s){return s.replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));}
function marked(text,ents){let out="",pos=0;
  for(const e of [...ents].sort((a,b)=>a.start-b.start||b.end-a.end)){if(e.start<pos)continue;
    out+=esc(text.slice(pos,e.start))+'<mark class="ent" data-type="'+esc(e.type)+'" style="--c:'+color(e.type)+'">'+esc(text.slice(e.start,e.end))+"<sub>"+esc(e.type)+"</sub></mark>";pos=e.end;}
  return out+esc(text.slice(pos));}
const form=document.getElementById("f"), qa=form.dataset.form==="question";
if(qa){document.getElementById("qa").hidden=false;document.getElementById("what").textContent="context";}
form.addEventListener("submit",async ev=>{ev.preventDefault();const out=document.getElementById("out");
  const text=document.getElementById("text").value;
  const body=qa?{question:document.getElementById("question").value,context:text}:{texts:text.split("\\n").filter(t=>t.trim())};
  out.innerHTML="…";
  const r=await fetch("predict",{method:"POST",headers:{"content-type":"application/json"},body:JSON.stringify(body)});
  const j=await r.json();
  if(!r.ok){out.innerHTML='<p class="err">'+esc(j.error||String(r.status))+"</p>";return;}
  out.innerHTML=qa?"<p>"+(j.start===null?"(no answer)":marked(text,[{start:j.start,end:j.end,type:"answer"}]))+"</p>"
    :j.results.map(x=>"<p>"+marked(x.text,x.entities)+"</p>").join("");});
</script></body></html>
"""
