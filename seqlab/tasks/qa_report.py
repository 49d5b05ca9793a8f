"""The QA sections of ``seqlab report``: exact match and F1, and the questions missed with the
answer and the prediction highlighted in their context."""

from __future__ import annotations

import html
import json

from ..errors import SeqlabError
from ..files import open_text as _open
from ..page import MAX_SENTENCES, _pct, _table


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
