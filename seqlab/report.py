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

import html
import json
from pathlib import Path

import yaml

from .errors import SeqlabError
from .files import check_output_file, write_text
from .page import CSS, SCRIPT, curves


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
    from .tasks import get_task

    preds = get_task(meta.get("task", "ner")).prediction_file(run, split)
    if preds is None:
        have = sorted(p.name for p in run.glob("predictions_*"))
        raise SeqlabError(f"{run}: no predictions of the {split} split ({', '.join(have) or 'none'});"
                          " choose another --split")
    return {"run": run, "meta": meta, "metrics": metrics, "log": log, "config": config,
            "split": split, "predictions": preds}


def render(data: dict) -> tuple[str, dict]:
    meta = data["meta"]
    task = meta.get("task", "ner")
    primary = "f1"
    from .tasks import get_task

    sections, summary = get_task(task).report_sections(data)
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


def write_report(run_dir: str | Path, split: str | None = None,
                 output: str | Path | None = None) -> Path:
    """Write the run's report of ``split`` (default: its task's, test for NER and dev for QA);
    return its path (default ``RUN/report_<split>.html``)."""
    run = Path(run_dir)
    if split is None:
        meta_path = run / "seqlab.json"
        split = "test"
        if meta_path.is_file():
            from .tasks import get_task

            task = json.loads(meta_path.read_text(encoding="utf-8")).get("task", "ner")
            split = get_task(task).report_split
    out = check_output_file(output or run / f"report_{split}.html")
    data = read_run(run, split)
    page, _ = render(data)
    write_text(out, page)
    return out
