"""``seqlab report RUN``: a trained run in one self-contained HTML page, and its model card.

The page reads the run directory only (``seqlab.json``, ``config.yaml``, ``metrics.json``,
``metrics.jsonl`` and the predictions file of the split), so it works on a copy of a run:
its config and scores per type; the training curves (loss, learning rate, dev score by
epoch); for NER the SemEval-2013 error categories per type (:mod:`seqlab.error_analysis`) and
which types are confused with which, a reliability diagram of the predicted label's
probability, and every sentence with an error, gold and predicted entities highlighted side
by side, filterable by type and category, the most frequent error patterns first; for QA
exact match and F1, and the questions missed with the answer and the prediction highlighted in
their context. Styles, scripts and figures (SVG) are inline: no network.

:func:`model_card` writes the run's ``README.md`` in the Hugging Face model-card format
(``model-index`` metrics, data, loss, head, how to load it), at the end of training.
"""

from __future__ import annotations

import gzip
import html
import io
import json
from collections import Counter
from pathlib import Path

import yaml

from .error_analysis import CATEGORIES, categorise, count, pattern
from .errors import SeqlabError
from .files import check_output_file, write_text

PALETTE = ["#e6550d", "#3182bd", "#31a354", "#756bb1", "#d6616b", "#8c6d31", "#17becf",
           "#bcbd22", "#7f7f7f", "#e377c2"]
MAX_SENTENCES = 3000   # error sentences shown; the counts cover every one


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else \
        open(path, encoding="utf-8")


def _find(run: Path, stem: str, exts: tuple[str, ...]) -> Path | None:
    for ext in exts:
        for p in (run / f"{stem}{ext}", run / f"{stem}{ext}.gz"):
            if p.is_file():
                return p
    return None


def read_run(run: Path, split: str) -> dict:
    """What the report shows, from the run directory alone.

    Raises:
        SeqlabError: not a finished run, or no predictions for ``split``.
    """
    meta_path = run / "seqlab.json"
    if not meta_path.is_file() or not (run / "metrics.json").is_file():
        raise SeqlabError(f"{run}: not a finished seqlab run (no seqlab.json or metrics.json)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    log = []
    if (run / "metrics.jsonl").is_file():
        log = [json.loads(l) for l in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
               if l.strip()]
    config = (run / "config.yaml").read_text(encoding="utf-8") if (run / "config.yaml").is_file() else ""
    preds = _find(run, f"predictions_{split}", (".conll", ".jsonl", ".json"))
    if preds is None:
        have = sorted(p.name for p in run.glob("predictions_*"))
        raise SeqlabError(f"{run}: no predictions of the {split} split ({', '.join(have) or 'none'});"
                          " choose another --split")
    return {"run": run, "meta": meta, "metrics": metrics, "log": log, "config": config,
            "split": split, "predictions": preds}


def _read_tagged(path: Path, scheme: str) -> list[dict]:
    """Sentences of a CoNLL-style predictions file: tokens, gold and predicted entities, and
    each word's predicted label with its probability."""
    from .data.schemes import tags_to_spans

    sents, rows = [], []

    def flush():
        if rows:
            toks = [r[0] for r in rows]
            gold, pred = [r[-3] for r in rows], [r[-2] for r in rows]
            sents.append({"tokens": toks, "gold": tags_to_spans(gold, scheme),
                          "pred": tags_to_spans(pred, scheme), "gold_tags": gold,
                          "pred_tags": pred, "probs": [float(r[-1]) for r in rows]})
        rows.clear()

    with _open(path) as fh:
        for line in fh:
            cols = line.split()
            if not cols:
                flush()
            else:
                rows.append(cols)
    flush()
    return sents


def _read_spans(path: Path) -> list[dict]:
    out = []
    with _open(path) as fh:
        for line in fh:
            r = json.loads(line)
            out.append({"tokens": r["tokens"],
                        "gold": [(e["type"], e["start"], e["end"]) for e in r["gold"]],
                        "pred": [(e["type"], e["start"], e["end"], e.get("score")) for e in r["pred"]]})
    return out


# --------------------------------------------------------------------------- figures


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def curves(log: list[dict], primary: str) -> str:
    """Training loss and learning rate by step, the dev score by epoch: an inline SVG."""
    from .study.report import pyplot

    plt = pyplot()
    train = [r for r in log if r.get("event") == "train"]
    evals = [r for r in log if r.get("event") == "eval" and r.get(primary) is not None]
    fig, axes = plt.subplots(1, 3, figsize=(11, 2.8))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], color="C0")
    axes[0].set(title="training loss", xlabel="optimizer step")
    axes[1].plot([r["step"] for r in train], [r["lr"] for r in train], color="C1")
    axes[1].set(title="learning rate", xlabel="optimizer step")
    axes[2].plot([r["epoch"] for r in evals], [100 * r[primary] for r in evals], "o-", color="C2")
    axes[2].set(title=f"dev {primary} (%) by epoch", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _svg(fig)


def reliability(sents: list[dict], bins: int = 15) -> tuple[str, dict]:
    """The reliability diagram of the predicted label's probability (every word), with the
    expected calibration error over all words and over entity words."""
    from .study.report import pyplot
    from .study.stats import expected_calibration_error

    conf, ok, ent = [], [], []
    for s in sents:
        for g, p, q in zip(s["gold_tags"], s["pred_tags"], s["probs"]):
            conf.append(q), ok.append(g == p), ent.append(g != "O" or p != "O")
    ece = {"all": expected_calibration_error(conf, ok, bins),
           "entity": expected_calibration_error([c for c, e in zip(conf, ent) if e],
                                                [o for o, e in zip(ok, ent) if e], bins)}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    edges = [k / bins for k in range(bins + 1)]
    for label, keep, color in (("all words", [True] * len(conf), "C0"), ("entity words", ent, "C3")):
        xs, ys, ns = [], [], []
        for b in range(bins):
            sel = [(c, o) for c, o, k in zip(conf, ok, keep)
                   if k and (edges[b] <= c < edges[b + 1] or (b == bins - 1 and c == 1.0))]
            if sel:
                xs.append(sum(c for c, _ in sel) / len(sel))
                ys.append(sum(o for _, o in sel) / len(sel))
                ns.append(len(sel))
        ax.plot(xs, ys, "o-", color=color, label=label, markersize=3)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlabel="predicted label's probability", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title="reliability")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _svg(fig), ece


# --------------------------------------------------------------------------- HTML


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222}
header{background:#23395d;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
main{padding:8px 24px 40px;max-width:1200px}section{margin:22px 0}
h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.chips span{display:inline-block;background:#eef;
border-radius:12px;padding:2px 10px;margin:2px 4px 2px 0}
mark.ent{background:color-mix(in srgb,var(--c) 22%,white);border-bottom:2px solid var(--c);
padding:0 2px;border-radius:3px}mark.ent sub{color:var(--c);font-size:10px;font-weight:600;
margin-left:2px}.sent{border:1px solid #e4e4e4;border-radius:6px;padding:6px 10px;margin:8px 0}
.sent .row{margin:2px 0}.sent .who{display:inline-block;width:64px;color:#777;font-size:12px}
.tags span{font-size:11px;background:#f3f3f3;border-radius:8px;padding:1px 7px;margin-right:4px}
.filters{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #eee}
select,input{font:inherit;margin-right:10px}.patterns li{cursor:pointer}
.patterns li:hover{text-decoration:underline}.ctx{white-space:pre-wrap}
mark.gold{background:#cdebc9}mark.pred{background:#fde0b6}pre{background:#f7f7f7;padding:8px}
"""

SCRIPT = """
let pattern='';
function applyFilters(){
  const t=document.getElementById('ftype').value, c=document.getElementById('fcat').value,
        q=document.getElementById('ftext').value.toLowerCase();
  let shown=0;
  document.querySelectorAll('.sent').forEach(el=>{
    const errs=el.dataset.errors?el.dataset.errors.split(' ').map(x=>x.split(':')):[];
    const pats=el.dataset.patterns?el.dataset.patterns.split('|'):[];
    const ok=(pattern?pats.includes(pattern):(!t&&!c)||errs.some(([ec,et])=>(!c||ec===c)&&(!t||et===t)))
      &&(!q||el.textContent.toLowerCase().includes(q));
    el.style.display=ok?'':'none'; if(ok) shown++;});
  document.getElementById('shown').textContent=shown;
  const chip=document.getElementById('fpat');
  if(chip){chip.hidden=!pattern;chip.querySelector('b').textContent=pattern;}
}
function byMenu(){pattern='';applyFilters();}
function pick(p){pattern=p;document.getElementById('ftype').value='';
  document.getElementById('fcat').value='';applyFilters();
  document.getElementById('sentences').scrollIntoView();}
"""


def _color(types: list[str]) -> dict[str, str]:
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(sorted(types))}


def highlight(tokens: list[str], entities, colors: dict[str, str]) -> str:
    """The words with entities marked (nested ones: the outer span marked, every one listed)."""
    flat, taken = [], set()
    for e in sorted(entities, key=lambda e: (-(e[2] - e[1]), e[1])):
        if not taken & set(range(e[1], e[2])):
            flat.append(e)
            taken |= set(range(e[1], e[2]))
    starts = {e[1]: e for e in flat}
    out, i = [], 0
    while i < len(tokens):
        if i in starts:
            typ, s, e = starts[i][:3]
            words = html.escape(" ".join(tokens[s:e]))
            out.append(f'<mark class="ent" style="--c:{colors.get(typ, "#888")}" data-type="{html.escape(typ)}">'
                       f'{words}<sub>{html.escape(typ)}</sub></mark>')
            i = e
        else:
            out.append(html.escape(tokens[i]))
            i += 1
    text = " ".join(out)
    if len(flat) < len(entities):
        text += ' <span class="tags">' + "".join(
            f"<span>{html.escape(' '.join(tokens[e[1]:e[2]]))}: {html.escape(e[0])}</span>"
            for e in sorted(entities, key=lambda e: (e[1], e[2]))) + "</span>"
    return text


def _table(rows: list[list], head: list[str]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{x}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def ner_sections(data: dict) -> tuple[list[str], dict]:
    meta, split = data["meta"], data["split"]
    path = data["predictions"]
    tagged = path.name.split(".")[1] == "conll"
    sents = _read_tagged(path, meta.get("train_scheme", "iob2")) if tagged else _read_spans(path)
    errors = [categorise(s["gold"], s["pred"]) for s in sents]
    counts = count(errors)
    types = sorted({e[0] for s in sents for e in s["gold"]} | {e[0] for s in sents for e in s["pred"]})
    colors = _color(types)
    res = data["metrics"].get(split, {})
    scores = res.get("default") or res.get("exact") or {}
    out = []
    rows = [[t, _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]), v["support"]]
            for t, v in scores.get("per_type", {}).items()]
    rows.append(["<b>overall</b>", _pct(scores.get("precision")), _pct(scores.get("recall")),
                 f"<b>{_pct(scores.get('f1'))}</b>", scores.get("support")])
    extra = ""
    if res.get("decodings"):
        extra = "<p>Both decodings of this run: " + ", ".join(
            f"{n} {_pct(s['default']['f1'])}" for n, s in res["decodings"].items()) + \
            f" (written and shown: {res.get('decode')}).</p>"
    out.append(f'<section id="scores"><h2>Scores on {split}</h2>'
               + _table(rows, ["type", "precision", "recall", "F1", "support"]) + extra + "</section>")
    cat_rows = [[t] + [v[c] for c in CATEGORIES] for t, v in counts["per_type"].items()]
    cat_rows.append(["<b>all</b>"] + [f"<b>{counts['overall'][c]}</b>" for c in CATEGORIES])
    conf = "".join(f"<li>{html.escape(k)}: {n}</li>" for k, n in counts["confusions"].items()) or \
        "<li>none</li>"
    out.append('<section id="errors"><h2>Error categories (SemEval-2013)</h2>'
               "<p>Each prediction is matched with at most one gold entity and each gold entity "
               "with at most one prediction: the exact pairs first, then the most overlapping "
               "pairs (the same boundaries, then the same type, then the larger overlap "
               "preferred), an optimal matching. exact: right boundaries and type; type: right "
               "boundaries, other type; boundary: overlapping, right type; boundary+type: "
               "overlapping, other type; missed: a gold entity left unmatched; spurious: a "
               "prediction left unmatched. Per type: the gold entity's type (the prediction's "
               "for spurious ones).</p>"
               + _table(cat_rows, ["type", *CATEGORIES]) +
               f"<p>Types confused (gold -> predicted):</p><ul>{conf}</ul></section>")
    if tagged:
        svg, ece = reliability(sents)
        out.append(f'<section id="calibration"><h2>Calibration</h2>{svg}<p>Expected calibration '
                   f"error (15 bins): {_pct(ece['all'])} over all words, {_pct(ece['entity'])} over "
                   "words in a gold or predicted entity.</p></section>")
    else:
        out.append('<section id="calibration"><h2>Calibration</h2><p>This head scores spans, '
                   "not words: no per-word probability to calibrate.</p></section>")
    freq = Counter(pattern(e) for errs in errors for e in errs if e["category"] != "exact")
    holding = Counter(p for errs in errors
                      for p in {pattern(e) for e in errs if e["category"] != "exact"})
    pats = "".join(
        f'<li data-pattern="{html.escape(p)}" data-sentences="{holding[p]}" '
        f'onclick="pick(this.dataset.pattern)">{html.escape(p)}: {n} '
        f'({holding[p]} sentence{"s" if holding[p] != 1 else ""})</li>'
        for p, n in freq.most_common(25))
    out.append(f'<section id="patterns"><h2>Most frequent error patterns</h2><ol class="patterns">'
               f"{pats or '<li>no errors</li>'}</ol></section>")
    wrong = [(s, errs) for s, errs in zip(sents, errors)
             if any(e["category"] != "exact" for e in errs)]
    wrong.sort(key=lambda x: -max(freq[pattern(e)] for e in x[1] if e["category"] != "exact"))
    blocks = []
    for s, errs in wrong[:MAX_SENTENCES]:
        bad = [e for e in errs if e["category"] != "exact"]
        # each error as category:type for the menus (both types of a confusion), its pattern
        # for the list above: a filter shows the sentences holding such an error, no others
        keys = sorted({f"{e['category']}:{x[0]}" for e in bad for x in (e["gold"], e["pred"]) if x})
        pats_here = sorted({pattern(e) for e in bad})
        tags = "".join(f"<span>{html.escape(pattern(e))}</span>" for e in bad)
        blocks.append(f'<div class="sent" data-errors="{html.escape(" ".join(keys))}" '
                      f'data-patterns="{html.escape("|".join(pats_here))}">'
                      f'<div class="row"><span class="who">gold</span>{highlight(s["tokens"], s["gold"], colors)}</div>'
                      f'<div class="row"><span class="who">predicted</span>{highlight(s["tokens"], s["pred"], colors)}</div>'
                      f'<div class="tags">{tags}</div></div>')
    options = "".join(f'<option value="{html.escape(t)}">{html.escape(t)}</option>' for t in types)
    cat_opts = "".join(f'<option value="{c}">{c}</option>' for c in CATEGORIES if c != "exact")
    note = (f" (the first {MAX_SENTENCES} shown)" if len(wrong) > MAX_SENTENCES else "")
    out.append(f'<section id="sentences"><h2>Sentences with errors: {len(wrong)} of {len(sents)}'
               f"{note}</h2><div class=\"filters\">type <select id=\"ftype\" onchange=\"byMenu()\">"
               f'<option value="">all</option>{options}</select> category <select id="fcat" '
               f'onchange="byMenu()"><option value="">all</option>{cat_opts}</select> text '
               f'<input id="ftext" oninput="applyFilters()" placeholder="search"> '
               f'<span id="fpat" hidden>pattern <b></b> <a href="#" onclick="pick(\'\');'
               f'return false">(all)</a></span> shown: '
               f'<span id="shown">{min(len(wrong), MAX_SENTENCES)}</span></div>{"".join(blocks)}</section>')
    summary = {"categories": counts, "sentences": len(sents), "with_errors": len(wrong)}
    return out, summary


def qa_sections(data: dict) -> tuple[list[str], dict]:
    path = data["predictions"]
    if not path.name.split(".")[1] == "jsonl":
        raise SeqlabError(f"{path}: predictions written before per-question lines; train the run "
                          "again (or evaluate it) to report it")
    rows = [json.loads(l) for l in _open(path)]
    n = len(rows)
    em = sum(r["exact_match"] for r in rows) / max(1, n)
    f1 = sum(r["f1"] for r in rows) / max(1, n)
    missed = sorted([r for r in rows if r["f1"] < 1.0], key=lambda r: r["f1"])
    blocks = []
    for r in missed[:MAX_SENTENCES]:
        ctx = r["context"]
        marks = []
        for ans in r["answers"][:1]:
            k = ctx.find(ans)
            if k >= 0:
                marks.append((k, k + len(ans), "gold"))
        if r.get("start") is not None:
            marks.append((r["start"], r["end"], "pred"))
        text, pos = [], 0
        for a, b, cls in sorted(marks):
            if a < pos:  # overlapping answer and prediction: the prediction in a line below
                continue
            text.append(html.escape(ctx[pos:a]) + f'<mark class="{cls}">{html.escape(ctx[a:b])}</mark>')
            pos = b
        text.append(html.escape(ctx[pos:]))
        blocks.append(f'<div class="sent" data-errors="{"missed" if not r["prediction"] else "wrong"}:">'
                      f'<div class="row"><b>{html.escape(r["question"])}</b> <span class="tags">'
                      f'<span>F1 {100 * r["f1"]:.0f}</span><span>answer: {html.escape(" | ".join(r["answers"]))}'
                      f'</span><span>predicted: {html.escape(r["prediction"] or "(none)")}</span></span></div>'
                      f'<div class="row ctx">{"".join(text)}</div></div>')
    out = [f'<section id="scores"><h2>Scores on {data["split"]}</h2>'
           + _table([[n, _pct(em), _pct(f1)]], ["questions", "exact match", "F1"]) + "</section>",
           f'<section id="sentences"><h2>Questions missed (F1 below 100): {len(missed)} of {n}</h2>'
           '<div class="filters"><select id="ftype" style="display:none"><option value=""></option>'
           '</select><select id="fcat" style="display:none"><option value=""></option></select>'
           'text <input id="ftext" oninput="applyFilters()" placeholder="search"> shown: '
           f'<span id="shown">{min(len(missed), MAX_SENTENCES)}</span></div>'
           '<p><mark class="gold">the answer</mark> <mark class="pred">the prediction</mark></p>'
           f'{"".join(blocks)}</section>']
    return out, {"questions": n, "exact_match": em, "f1": f1, "missed": len(missed)}


def render(data: dict) -> tuple[str, dict]:
    meta = data["meta"]
    task = meta.get("task", "ner")
    primary = "f1"
    sections, summary = (qa_sections(data) if task == "qa" else ner_sections(data))
    cfg = yaml.safe_load(data["config"]) if data["config"] else {}
    loss = (cfg.get("loss") or {}).get("name", "?")
    chips = [f"task {task}", f"head {meta.get('head', 'softmax')}", f"loss {loss}",
             f"data {meta.get('dataset', '?')}", f"encoder {(cfg.get('model') or {}).get('encoder', '?')}",
             f"seqlab {meta.get('seqlab_version', '?')}"]
    curve = curves(data["log"], primary) if data["log"] else "<p>no training log</p>"
    body = "".join(sections[:1]) + f'<section id="curves"><h2>Training</h2>{curve}</section>' + \
        "".join(sections[1:])
    name = html.escape(data["run"].resolve().name)
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>seqlab report: "
            f"{name}</title><style>{CSS}</style></head><body><header><h1>{name}: {data['split']}"
            f"</h1></header><main><div class=\"chips\">"
            + "".join(f"<span>{html.escape(c)}</span>" for c in chips) + "</div>"
            f"<section id=\"config\"><details><summary>config.yaml</summary><pre>"
            f"{html.escape(data['config'])}</pre></details></section>{body}</main>"
            f"<script>{SCRIPT}</script></body></html>")
    return page, summary


def write_report(run_dir: str | Path, split: str = "test", output: str | Path | None = None) -> Path:
    """Write the run's report; return its path (default ``RUN/report_<split>.html``)."""
    run = Path(run_dir)
    out = check_output_file(output or run / f"report_{split}.html")
    data = read_run(run, split)
    page, _ = render(data)
    write_text(out, page)
    return out


# --------------------------------------------------------------------------- the model card


_BASE = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}


def model_card(directory: Path, cfg, meta: dict, metrics: dict) -> str:
    """The run's README.md in the Hugging Face model-card format (the figures the run's task
    names, :meth:`~seqlab.tasks.Task.card_metrics`)."""
    from .data.registry import DATASETS
    from .heads import get_head
    from .tasks import get_task

    task, head = meta["task"], meta.get("head")
    task_cls = get_task(task)
    pipeline = task_cls.pipeline_tag
    dataset = cfg.data.dataset or "custom"
    spec = DATASETS.get(dataset)
    results = []
    for split in ("dev", "test"):
        r = metrics.get(split)
        if not r:
            continue
        vals = task_cls.card_metrics(r)
        results.append({
            "task": {"type": pipeline or task, "name": task_cls.title or task},
            "dataset": {"name": dataset, "type": dataset, "split": split},
            "metrics": [{"type": t, "value": round(v, 2), "name": n} for t, v, n in vals]})
    plain = pipeline is not None and head is not None and get_head(head).in_transformers
    # a pipeline tag only where transformers.pipeline loads the head: elsewhere it would build
    # the encoder's plain token classifier with a new random layer and answer without an error
    front = {"library_name": "transformers" if plain else "seqlab",
             "pipeline_tag": pipeline if plain else None,
             "tags": ["seqlab", task, f"head-{head}", f"loss-{cfg.loss.name}"],
             "datasets": [dataset], "language": [spec.language] if spec else None,
             "base_model": _BASE.get(cfg.model.encoder, cfg.model.encoder),
             "model-index": [{"name": directory.name, "results": results}]}
    front = {k: v for k, v in front.items() if v is not None}
    api = (f"```python\nimport seqlab\n\nlabeller = seqlab.load(\"{directory.name}\")  # the "
           "entities of `seqlab predict`\nlabeller.predict([\"Peter Blackburn flew to Brussels.\"])"
           "\n```\n")
    load = api + (
        f"\nIt also loads in `transformers.pipeline(\"{pipeline}\", model=\"{directory.name}\")`; "
        "see seqlab's README for how the pipeline's entities relate to these.\n"
        if front["library_name"] == "transformers" else
        f"\nThe model itself: `seqlab.hf.load_model(\"{directory.name}\")` (a PreTrainedModel); "
        f"`transformers.pipeline` cannot load the {head} head.\n")
    nested = ""
    if "allow_nested" in meta:
        nested = (f"Nested entities: the run keeps nested entities (`eval.allow_nested: "
                  f"{cfg.eval.allow_nested}`)." if meta["allow_nested"] else
                  f"Nested entities: predictions are made flat (`eval.allow_nested: "
                  f"{cfg.eval.allow_nested}`).")
        nested = f"\n\n{nested}"
    rows = "\n".join(f"| {r['dataset']['split']} | " + " | ".join(f"{m['value']:.2f}" for m in r["metrics"])
                     + " |" for r in results)
    names = " | ".join(m["name"] for m in results[0]["metrics"]) if results else ""
    t = cfg.train
    opts = ", ".join(f"{k}={v}" for k, v in cfg.loss.options.items())
    return ("---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n"
            f"# {directory.name}\n\n"
            f"A {task.upper()} model trained with [seqlab](https://pypi.org/project/seqlab/): the "
            f"`{head}` head on `{cfg.model.encoder}`, loss `{cfg.loss.name}`"
            f"{f' ({opts})' if opts else ''}, on `{dataset}`.{nested}\n\n"
            f"## Scores\n\n| split | {names} |\n|---|" + "---:|" * (len(results[0]['metrics']) if results else 0)
            + f"\n{rows}\n\n"
            f"## Training\n\n{t.epochs:g} epoch{'' if t.epochs == 1 else 's'} (best: epoch "
            f"{metrics.get('best_epoch')}), batch "
            f"{t.batch_size} x {t.gradient_accumulation_steps} accumulation, learning rate "
            f"{t.learning_rate:g} (warm-up {t.warmup_ratio:g}), max_length {cfg.model.max_length}, "
            f"seed {t.seed}; {metrics.get('train_time_s')} s of training at "
            f"{metrics.get('train_tokens_per_s') or 0:.0f} real tokens/s. `config.yaml` beside this "
            "card is the whole config; `metrics.json` every figure.\n\n"
            f"## Use\n\n{load}\nor from the command line: `seqlab predict {directory.name} texts.txt` "
            f"(JSON lines), `seqlab serve {directory.name}` (HTTP), `seqlab report "
            f"{directory.name}` (the errors, in a page).\n")
