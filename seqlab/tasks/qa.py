"""Span-extraction QA as a task: pointer (start/end) or tagging (B/I) head, same losses.

Features: question + a window of the context, ``max_length`` subwords, consecutive windows
overlapping by ``doc_stride``; offsets map subwords back to characters. A window that does not
hold the answer points at the CLS position (pointer) or is all ``O`` (tagging).

Pointer loss: the configured loss over positions (class dimension = positions), with every
position outside the context except CLS masked to ``-inf``, averaged over start and end.
Tagging loss: the configured loss over ``O``/``B-ANS``/``I-ANS`` on context tokens, as NER.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.alignment import IGNORE, pad_batch
from ..data.qa import QAExample, load_qa, read_squad, trainable
from ..errors import DataError, SeqlabError, first_process
from ..files import check_output_file, evaluate_output, write_json
from ..losses import build_loss
from ..metrics import cmrc_em_f1, squad_em_f1

TAG_LABELS = ["O", "B-ANS", "I-ANS"]


def pointer_loss(loss_fn, start_logits: torch.Tensor, end_logits: torch.Tensor,
                 start_positions: torch.Tensor, end_positions: torch.Tensor, *,
                 allowed: torch.Tensor | None = None, num_items_in_batch=None) -> torch.Tensor:
    """The pointer head's loss: ``loss_fn`` over positions (class dimension = positions) for the
    start and for the end, averaged over the two, as the model's own QA loss.

    ``allowed`` ``(B, L)``: positions that can be answers (the context and CLS); the others get
    a ``-inf`` logit, so they are no classes at all. Without it (the Trainer gives the loss no
    inputs) every position competes, special tokens and the question included.
    With ``num_items_in_batch`` (features in the whole accumulated batch) the two sums are
    divided by twice that number: gradient accumulation then equals the full batch.
    """
    start, end = start_logits.float(), end_logits.float()
    if allowed is not None:
        start = start.masked_fill(~allowed, -math.inf)
        end = end.masked_fill(~allowed, -math.inf)
    if num_items_in_batch is None:
        return (loss_fn(start, start_positions) + loss_fn(end, end_positions)) / 2
    n = 2 * num_items_in_batch
    return loss_fn(start, start_positions, n) + loss_fn(end, end_positions, n)


def encode(tokenizer, examples: list[QAExample], cfg: Config, *, with_labels: bool) -> list[dict]:
    """Windowed features for the examples, with answer positions when ``with_labels``."""
    q = cfg.qa
    if tokenizer.padding_side != "right":
        raise SeqlabError("QA needs a tokenizer that pads on the right")
    questions = truncate_questions(tokenizer, [ex.question for ex in examples], q.max_query_length)
    enc = tokenizer(questions, [ex.context for ex in examples], truncation="only_second",
                    max_length=cfg.model.max_length, stride=q.doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    feats = []
    for i, ids in enumerate(enc["input_ids"]):
        ex_idx = enc["overflow_to_sample_mapping"][i]
        seq_ids = enc.sequence_ids(i)
        offsets = enc["offset_mapping"][i]
        ctx_offsets = [tuple(o) if s == 1 else None for o, s in zip(offsets, seq_ids)]
        f = {"input_ids": ids, "example": ex_idx, "offsets": ctx_offsets, "length": len(ids)}
        if "token_type_ids" in enc:
            f["token_type_ids"] = enc["token_type_ids"][i]
        if with_labels:
            ex = examples[ex_idx]
            start_tok = end_tok = 0
            if ex.answers and not ex.is_impossible:
                a = ex.answers[0]
                s_char, e_char = a["answer_start"], a["answer_start"] + len(a["text"])
                ctx = [k for k, o in enumerate(ctx_offsets) if o is not None]
                if ctx and ctx_offsets[ctx[0]][0] <= s_char and ctx_offsets[ctx[-1]][1] >= e_char:
                    start_tok = next(k for k in ctx if ctx_offsets[k][1] > s_char)
                    end_tok = next(k for k in reversed(ctx) if ctx_offsets[k][0] < e_char)
            f["start_positions"], f["end_positions"] = start_tok, end_tok
            tags = [IGNORE if o is None else 0 for o in ctx_offsets]
            if start_tok > 0:
                tags[start_tok] = 1
                for k in range(start_tok + 1, end_tok + 1):
                    tags[k] = 2
            f["labels"] = tags
        feats.append(f)
    return feats


def truncate_questions(tokenizer, questions: list[str], max_query_length: int) -> list[str]:
    """Each question cut to its first ``max_query_length`` subwords (at a character offset, so
    the text stays text); says once how many were cut."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out, cut = [], 0
    for question, offsets in zip(questions, enc["offset_mapping"]):
        if len(offsets) > max_query_length:
            question = question[: offsets[max_query_length - 1][1]]
            cut += 1
        out.append(question)
    if cut and first_process():
        print(f"seqlab: {cut} of {len(questions)} questions cut to qa.max_query_length="
              f"{max_query_length} subwords", file=sys.stderr)
    return out


def best_tagged_span(start_scores, end_scores, offsets, *, max_answer_length: int):
    """The exact best ``(score, start_char, end_char)`` of ``start(s) + end(e)`` over context
    positions ``s <= e < s + max_answer_length``, in one pass (a sliding-window maximum of the
    start scores); None when the window has no context.

    The tagging head's start and end scores mean something only as a pair (prefix sums in
    :func:`tagging_scores`), so an n-best list of each alone can miss the best span."""
    from collections import deque

    best, window = None, deque()  # context positions, their start scores decreasing
    for e, off in enumerate(offsets):
        if off is None:
            window.clear()
            continue
        while window and start_scores[window[-1]] <= start_scores[e]:
            window.pop()
        window.append(e)
        if window[0] <= e - max_answer_length:
            window.popleft()
        s = window[0]
        score = start_scores[s] + end_scores[e]
        if best is None or score > best[0]:
            best = (score, offsets[s][0], off[1])
    return best


def best_span(start_scores, end_scores, offsets, *, n_best: int, max_answer_length: int):
    """Best ``(score, start_char, end_char)`` with end >= start, at most ``max_answer_length``
    subwords, both inside the context; None when the window has no context."""
    ctx = [k for k, o in enumerate(offsets) if o is not None]
    if not ctx:
        return None
    def search(starts, ends):
        best = None
        for s in starts:
            for e in ends:
                if e < s or e - s + 1 > max_answer_length or offsets[e] is None:
                    continue
                score = start_scores[s] + end_scores[e]
                if best is None or score > best[0]:
                    best = (score, offsets[s][0], offsets[e][1])
        return best

    best = search(sorted(ctx, key=lambda k: -start_scores[k])[:n_best],
                  sorted(ctx, key=lambda k: -end_scores[k])[:n_best])
    if best is None:  # no valid pair among the n-best: search every valid pair
        best = search(ctx, ctx)
    return best


def tagging_scores(log_probs: torch.Tensor, offsets) -> tuple[list[float], list[float]]:
    """Turn B/I/O log-probabilities into start/end scores for :func:`best_span`.

    A span s..e scores its tagging's log-probability against tagging every token ``O``:
    ``[log B(s) - log O(s)] + sum_{k=s+1..e} [log I(k) - log O(k)]``, written as
    ``start(s) + end(e)`` with prefix sums (the no-answer tagging scores 0).
    """
    lp = log_probs.tolist()
    n = len(lp)
    cum = [0.0] * (n + 1)
    for k in range(n):
        cum[k + 1] = cum[k] + ((lp[k][2] - lp[k][0]) if offsets[k] is not None else 0.0)
    start = [lp[k][1] - lp[k][0] - cum[k + 1] for k in range(n)]
    end = [cum[k + 1] for k in range(n)]
    return start, end


class QATask:
    """Span QA behind the task protocol (:class:`seqlab.tasks.Task`)."""

    primary_metric = "F1"
    prediction_ext = "json"

    def __init__(self, cfg: Config, tokenizer, splits: dict[str, list[QAExample]], language: str):
        self.cfg, self.tokenizer, self.splits, self.language = cfg, tokenizer, splits, language
        self.loss_fn = build_loss(cfg.loss.name, **cfg.loss.options)
        self._cache: dict[str, list[dict]] = {}

    @classmethod
    def from_config(cls, cfg: Config) -> QATask:
        from ..models import load_tokenizer

        d = cfg.data
        splits, language = load_qa(d.dataset, d.data_dir, train_split=d.train_split,
                                   eval_split=d.eval_split, train_file=d.train_file,
                                   eval_file=d.dev_file)
        if "train" not in splits:
            raise DataError("no training questions: set data.dataset or data.train_file")
        splits["train"] = trainable(splits["train"])
        if d.limit:
            splits["train"] = splits["train"][: d.limit]
        if d.eval_limit and "dev" in splits:
            splits["dev"] = splits["dev"][: d.eval_limit]
        return cls(cfg, load_tokenizer(cfg.model.encoder), splits, language)

    def new_model(self):
        return _load_model(self.cfg.model.encoder, self.cfg.qa.head)

    def has_split(self, split: str) -> bool:
        return bool(self.splits.get(split))

    def score(self, result: dict) -> float:
        return float(result["f1"])

    def report(self, result: dict) -> str:
        if "dev" not in result:
            return ""
        r = result["dev"]
        return (f"eval ({r['questions']} questions): EM {100 * r['exact_match']:.2f} "
                f"F1 {100 * r['f1']:.2f}")

    def count_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.cfg.qa.head == "tagging":
            return (batch["labels"] != IGNORE).sum()
        return torch.tensor(batch["input_ids"].shape[0])

    # the CLI's paths, defined at the end of this module
    cli_evaluate = staticmethod(lambda args, meta, cfg: _evaluate_cli(args, meta, cfg))
    cli_predict = staticmethod(lambda args, meta, cfg: _predict_cli(args, meta, cfg))

    def _features(self, split: str) -> list[dict]:
        if split not in self._cache:
            self._cache[split] = encode(self.tokenizer, self.splits[split], self.cfg, with_labels=True)
        return self._cache[split]

    def features(self, split: str):
        import datasets

        keep = ["input_ids", "length", "start_positions", "end_positions", "labels"]
        feats = self._features(split)
        if "token_type_ids" in feats[0]:
            keep.append("token_type_ids")
        return datasets.Dataset.from_dict({k: [f[k] for f in feats] for k in keep})

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(rows, self.tokenizer.pad_token_id)

    def _forward(self, model, batch):
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if "token_type_ids" in batch and getattr(model.config, "type_vocab_size", 0) > 1:
            kwargs["token_type_ids"] = batch["token_type_ids"]
        return model(**kwargs)

    def compute_loss(self, model, batch, *, num_items_in_batch=None) -> torch.Tensor:
        out = self._forward(model, batch)
        if self.cfg.qa.head == "tagging":
            return self.loss_fn(out.logits, batch["labels"], num_items_in_batch)
        # positions outside the context (question, specials, padding) cannot be answers;
        # CLS (position 0) stays for windows without the answer
        allowed = batch["labels"] != IGNORE
        allowed[:, 0] = True
        return pointer_loss(self.loss_fn, out.start_logits, out.end_logits,
                            batch["start_positions"], batch["end_positions"], allowed=allowed,
                            num_items_in_batch=num_items_in_batch)

    @torch.inference_mode()
    def predict(self, model, examples: list[QAExample], *, device=None, progress: bool = True,
                batch_size: int | None = None, dtype: torch.dtype | None = None
                ) -> dict[str, dict]:
        """``{question id: {"text", "start", "end", "score"}}``, windows merged."""
        q = self.cfg.qa
        feats = encode(self.tokenizer, examples, self.cfg, with_labels=False)
        device = device or next(model.parameters()).device
        was_training = model.training
        model.eval()
        best: dict[int, tuple] = {}
        null: dict[int, float] = {}
        order = sorted(range(len(feats)), key=lambda k: feats[k]["length"])
        bs = batch_size or self.cfg.train.eval_batch_size
        for b in tqdm(range(0, len(order), bs), desc="predicting", unit="batch",
                      disable=not progress, leave=False):
            chunk = [feats[k] for k in order[b: b + bs]]
            batch = {k: v.to(device) for k, v in self.collate(chunk).items()}
            with (torch.autocast(batch["input_ids"].device.type, dtype=dtype) if dtype
                  else contextlib.nullcontext()):
                out = self._forward(model, batch)
            for row, f in enumerate(chunk):
                n = f["length"]
                if q.head == "tagging":
                    lp = out.logits[row, :n].float().log_softmax(-1).cpu()
                    s_sc, e_sc = tagging_scores(lp, f["offsets"])
                    null_score = 0.0
                else:
                    s_sc = out.start_logits[row, :n].float().cpu().tolist()
                    e_sc = out.end_logits[row, :n].float().cpu().tolist()
                    null_score = s_sc[0] + e_sc[0]
                ex = f["example"]
                null[ex] = min(null.get(ex, math.inf), null_score)
                if q.head == "tagging":
                    cand = best_tagged_span(s_sc, e_sc, f["offsets"],
                                            max_answer_length=q.max_answer_length)
                else:
                    cand = best_span(s_sc, e_sc, f["offsets"], n_best=q.n_best,
                                     max_answer_length=q.max_answer_length)
                if cand is not None and (ex not in best or cand[0] > best[ex][0]):
                    best[ex] = cand
        if was_training:
            model.train()
        preds = {}
        for i, ex in enumerate(examples):
            if i not in best or (q.version_2 and null[i] - best[i][0] > q.null_threshold):
                preds[ex.id] = {"text": "", "start": None, "end": None,
                                "score": null.get(i)}
                continue
            score, s, e = best[i]
            preds[ex.id] = {"text": ex.context[s:e], "start": s, "end": e, "score": round(score, 4)}
        return preds

    def score_predictions(self, examples: list[QAExample], preds: dict[str, dict]) -> dict:
        version = "2.0" if self.cfg.qa.version_2 else "1.1"
        em = f1 = 0.0
        for ex in examples:
            if self.language == "zh":
                e, f = cmrc_em_f1(preds[ex.id]["text"], ex.references)
            else:
                e, f = squad_em_f1(preds[ex.id]["text"], ex.references, version=version)
            em, f1 = em + e, f1 + f
        n = max(1, len(examples))
        return {"exact_match": em / n, "f1": f1 / n, "questions": len(examples)}

    def evaluate(self, model, split: str, *, device=None, out_file: Path | None = None,
                 progress: bool = True, accelerator=None, dtype: torch.dtype | None = None
                 ) -> dict:
        from . import gather_shards, shard_of

        examples = self.splits[split]
        mine = shard_of(len(examples), accelerator)
        part = self.predict(model, [examples[i] for i in mine], device=device, progress=progress,
                            dtype=dtype)
        values = gather_shards(mine, [part[examples[i].id] for i in mine], len(examples),
                               accelerator)
        preds = {ex.id: v for ex, v in zip(examples, values)}
        if accelerator is not None and not accelerator.is_main_process:
            out_file = None
        if out_file is not None:
            out_file.write_text(json.dumps({k: v["text"] for k, v in preds.items()},
                                           ensure_ascii=False, indent=1), encoding="utf-8")
        return self.score_predictions(examples, preds)

    @staticmethod
    def summary(result: dict) -> dict:
        return {"exact_match": result["exact_match"], "f1": result["f1"]}

    def save_extra(self, directory: Path) -> None:
        from .. import __version__

        write_json(directory / "seqlab.json", {
            "seqlab_version": __version__, "task": "qa", "head": self.cfg.qa.head,
            "language": self.language, "dataset": self.cfg.data.dataset,
            "max_length": self.cfg.model.max_length})


def _load_model(name: str, head: str):
    from ..models import load_question_answering, load_token_classifier

    if head == "tagging":
        return load_token_classifier(name, TAG_LABELS if not Path(name).joinpath("seqlab.json").exists()
                                     else None)
    return load_question_answering(name)


def _task_for(args, meta: dict, cfg: Config, splits: dict, language: str):
    from ..models import load_tokenizer

    cfg.qa.head = meta["head"]
    cfg.model.max_length = meta["max_length"]
    tokenizer = load_tokenizer(args.model_dir)
    from ..export import prediction_model

    model = prediction_model(args, meta)
    return QATask(cfg, tokenizer, splits, language), model


def _evaluate_cli(args, meta: dict, cfg: Config) -> int:
    if args.bf16:
        raise SeqlabError("--bf16 is available for NER models only")
    name = f"{args.dataset}-{args.split}" if args.dataset else Path(args.file).stem
    out = evaluate_output(args, name, "json")
    if args.dataset:
        splits, language = load_qa(args.dataset, args.data_dir,
                                   eval_split="dev" if args.split == "test" else args.split,
                                   roles=("dev",))
        examples = splits["dev"]
    else:
        examples, language = read_squad(args.file)[0], meta["language"]
    cfg.train.eval_batch_size = args.batch_size
    task, model = _task_for(args, meta, cfg, {"eval": examples}, language)
    result = task.evaluate(model, "eval", out_file=out, progress=not args.no_progress)
    print(f"{name}: {result['questions']} questions, EM {100 * result['exact_match']:.2f}, "
          f"F1 {100 * result['f1']:.2f}")
    print(f"predictions written to {out}")
    return 0


def _predict_cli(args, meta: dict, cfg: Config) -> int:
    if args.bf16:
        raise SeqlabError("--bf16 is available for NER models only")
    if not args.question or not args.context_file:
        raise SeqlabError("a QA model needs --question and --context-file")
    path = Path(args.context_file)
    if not path.is_file():
        raise SeqlabError(f"{path}: file not found")
    check_output_file(args.output)
    context = path.read_text(encoding="utf-8")
    ex = QAExample("q", "", context, args.question, [])
    task, model = _task_for(args, meta, cfg, {}, meta["language"])
    pred = task.predict(model, [ex], progress=False, batch_size=args.batch_size)["q"]
    line = json.dumps({"question": args.question, "answer": pred["text"], "start": pred["start"],
                       "end": pred["end"], "score": pred["score"]}, ensure_ascii=False)
    if args.output:
        Path(args.output).write_text(line + "\n", encoding="utf-8")
    else:
        sys.stdout.write(line + "\n")
    return 0
