"""The NER sections of ``seqlab report``: scores per type, the SemEval-2013 error categories
from an optimal matching (:mod:`seqlab.error_analysis`), the confusions, calibration, the most
frequent error patterns and every sentence with an error, filterable."""

from __future__ import annotations

import html
from collections import Counter

from ..error_analysis import CATEGORIES, categorise, count, pattern
from ..page import MAX_SENTENCES, _color, _pct, _table, highlight, reliability
from .ner_files import format_of_file


def ner_sections(data: dict) -> tuple[list[str], dict]:
    meta, split = data["meta"], data["split"]
    path = data["predictions"]
    fmt = format_of_file(path)
    sents = fmt.read_sentences(path, meta.get("train_scheme", "iob2"))
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
    if sents and "probs" in sents[0]:  # a word's label and its probability
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
