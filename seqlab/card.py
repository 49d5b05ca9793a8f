"""The model card: a finished run's ``README.md`` in the Hugging Face model-card format, written
beside the run's other files (:func:`seqlab.train.finish`)."""

from __future__ import annotations

from pathlib import Path

import yaml


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
    spec = DATASETS.get(dataset, None)
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
