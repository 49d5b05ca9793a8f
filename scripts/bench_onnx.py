"""Prediction speed and test F1 of a trained NER run: torch, ONNX Runtime float32 and int8, and
`transformers.pipeline`, timed in turn on the same text in one run.

    make bench-onnx                                   # the `make train` model, CoNLL-2003 test
    python scripts/bench_onnx.py runs/conll2003-ce --repeats 3 --threads 2

Text in, entities with character offsets out, as `seqlab predict` does it: sentences/s is the
median of interleaved runs. Test F1 (seqeval default) is scored on the gold words, outside the
timing. Exports go to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqlab.assemble import config_from_dict
from seqlab.data.alignment import split_words
from seqlab.export import OrtModel, export
from seqlab.models import load_token_classifier, load_tokenizer
from seqlab.heads import get_head
from seqlab.tasks.ner_corpus import load_corpus
from seqlab.tasks.ner_files import score_and_write
from seqlab.tasks.ner_inference import entity_records, predict_sentences, predict_words


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", default="runs/conll2003-ce")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="onnxruntime intra-op threads (default: torch's)")
    p.add_argument("--data-dir", default=os.environ.get("SEQLAB_DATA"))
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    meta = json.loads((run / "seqlab.json").read_text())
    cfg = config_from_dict({"task": "ner", "data": {"dataset": meta.get("dataset", "conll2003"),
                                                    "data_dir": args.data_dir},
                            "eval": {"decode": "argmax"}})
    corpus = load_corpus(cfg, meta["labels"])
    sents = corpus.splits["test"]
    texts = [" ".join(s.tokens) for s in sents]
    tok = load_tokenizer(str(run))
    head = get_head("softmax")(cfg, meta["labels"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fp32 = export(run, Path(tmp) / "fp32")
        export_s = time.perf_counter() - t0
        int8 = export(run, Path(tmp) / "int8", quantize="int8")
        models = {"seqlab, torch": load_token_classifier(str(run)),
                  "seqlab, onnxruntime float32": OrtModel(fp32, threads=args.threads),
                  "seqlab, onnxruntime int8": OrtModel(int8, threads=args.threads)}
        from transformers import pipeline

        ner = pipeline("token-classification", model=str(run), aggregation_strategy="first",
                       batch_size=64, device=-1)
        speed: dict[str, list[float]] = {name: [] for name in [*models, "pipeline"]}
        f1 = {}
        for _ in range(args.repeats):
            for name, model in models.items():
                t0 = time.perf_counter()
                split = [split_words(t) for t in texts]
                preds = predict_sentences(model, tok, head, [w for w, _ in split],
                                          max_length=meta["max_length"],
                                          overlap=meta["window_overlap"], batch_size=64,
                                          progress=False)["argmax"]
                for text, (_, offsets), pred in zip(texts, split, preds):
                    entity_records(pred.entities, offsets, text)
                speed[name].append(len(texts) / (time.perf_counter() - t0))
                if name not in f1:
                    preds = predict_words(model, tok, [s.tokens for s in sents],
                                          max_length=meta["max_length"],
                                          overlap=meta["window_overlap"], batch_size=64,
                                          progress=False)
                    tags = [[corpus.labels[i] for i, _ in p] for p in preds]
                    f1[name] = score_and_write(sents, tags, corpus.scheme, corpus.train_scheme,
                                               None)["default"]["f1"]
            t0 = time.perf_counter()
            ner(texts)
            speed["pipeline"].append(len(texts) / (time.perf_counter() - t0))
        record = json.loads((int8 / "export.json").read_text())
    base = statistics.median(speed["pipeline"])
    print(f"\n{run}, {len(texts)} test sentences, median of {args.repeats} interleaved runs, torch "
          f"threads {torch.get_num_threads()}, onnxruntime threads {args.threads}; float32 export "
          f"{export_s:.0f} s, logits within {record['max_abs_logit_diff_vs_torch']:.1e} of torch "
          f"(int8: {record['max_abs_logit_diff_vs_torch_int8']:.2f})")
    print("| | sentences/s | x pipeline | test F1 |\n|---|---:|---:|---:|")
    for name, values in speed.items():
        med = statistics.median(values)
        score = f"{100 * f1[name]:.2f}" if name in f1 else "-"
        print(f"| {name} | {med:.0f} | {med / base:.2f} | {score} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
