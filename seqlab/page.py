"""The pieces of a self-contained HTML page (:mod:`seqlab.report` and each task's sections):
entities highlighted over words, tables, figures as inline SVG, training curves, a reliability
diagram, and the page's style and script (filters by type, category and error pattern). It
names no task; each task's sections (``seqlab/tasks/*_report.py``) draw with it.
"""

from __future__ import annotations

import html
import io



PALETTE = ["#e6550d", "#3182bd", "#31a354", "#756bb1", "#d6616b", "#8c6d31", "#17becf",
           "#bcbd22", "#7f7f7f", "#e377c2"]


MAX_SENTENCES = 3000   # error sentences shown; the counts cover every one




def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def curves(log: list[dict], primary: str) -> str:
    """Training loss and learning rate by step, the dev score by epoch: an inline SVG."""
    from .figures import pyplot

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
    from .figures import pyplot
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
