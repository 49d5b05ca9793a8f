"""Span-extraction QA as a task; the head (``model.head: pointer | tagging``) scores the answer.

Features: question + a window of the context, ``max_length`` subwords, consecutive windows
overlapping by ``doc_stride``; offsets map subwords back to characters. A window that does not
hold the answer points at the CLS position (pointer) or is all ``O`` (tagging).

The predictions file (``predictions_dev.jsonl``) has a line per question: its id, article,
question, context, the reference answers, the prediction with its character span and score, and
the question's exact match and F1, so every score can be recomputed from it alone.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.alignment import IGNORE, pad_batch, special_ids, trim_offsets
from ..data.qa import QAExample, load_qa, read_squad, trainable
from ..data.registry import unknown_dataset
from ..errors import ConfigError, DataError, SeqlabError, first_process
from ..files import check_output_file, dumps_line, evaluate_output, read_text_file, write_json
from ..heads import get_head
from ..heads.contracts import QAHeadContract
from ..metrics import cmrc_em_f1, squad_em_f1
from . import (CliOption, EvaluateOptions, PredictOptions, Predictor, RequestError, Run, StudySplit,
               Task, register_task)


@dataclass
class QAConfig:
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    n_best: int = 20
    null_threshold: float = 0.0       # SQuAD v2: predict "" when null score - best > this
    version_2: bool = False           # allow unanswerable questions


def encode(tokenizer, examples: list[QAExample], cfg: Config, *, with_labels: bool) -> list[dict]:
    """Windowed features for the examples, with answer positions when ``with_labels``."""
    q = cfg.qa
    if tokenizer.padding_side != "right":
        raise SeqlabError("QA needs a tokenizer that pads on the right")
    questions = truncate_questions(tokenizer, [ex.question for ex in examples], q.max_query_length)
    enc = tokenizer(questions, [ex.context for ex in examples], truncation="only_second",
                    max_length=cfg.model.max_length, stride=q.doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=False,
                    split_special_tokens=True)
    special = special_ids(tokenizer)
    feats = []
    for i, ids in enumerate(enc["input_ids"]):
        ex_idx = enc["overflow_to_sample_mapping"][i]
        seq_ids = enc.sequence_ids(i)
        # text that a vocabulary still turns into a special piece is not the model's structure
        ids = [tokenizer.unk_token_id if s is not None and t in special else t
               for t, s in zip(ids, seq_ids)]
        offsets = enc["offset_mapping"][i]
        ctx_offsets = trim_offsets(examples[ex_idx].context,
                                   [tuple(o) if s == 1 else None for o, s in zip(offsets, seq_ids)])
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
                    if ctx_offsets[k] is not None:
                        tags[k] = 2
            f["labels"] = tags
        feats.append(f)
    return feats


def truncate_questions(tokenizer, questions: list[str], max_query_length: int) -> list[str]:
    """Each question cut to its first ``max_query_length`` subwords (at a character offset, so
    the text stays text); says once how many were cut."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True,
                    split_special_tokens=True)
    out, cut = [], 0
    for question, offsets in zip(questions, enc["offset_mapping"]):
        if len(offsets) > max_query_length:
            question = question[: offsets[max_query_length - 1][1]].rstrip()
            cut += 1
        out.append(question)
    if cut and first_process():
        print(f"seqlab: {cut} of {len(questions)} questions cut to qa.max_query_length="
              f"{max_query_length} subwords", file=sys.stderr)
    return out


def _deprecated_head(raw: dict) -> dict:
    """``qa.head`` (before heads were a model key) read as ``model.head``, said once."""
    qa = raw.get("qa")
    if not isinstance(qa, dict) or "head" not in qa:
        return raw
    raw = dict(raw)
    qa = dict(qa)
    head = qa.pop("head")
    raw["qa"] = qa
    model = dict(raw.get("model") or {})
    if model.get("head") not in (None, head):
        raise ConfigError(f"qa.head {head!r} and model.head {model['head']!r} disagree; qa.head "
                          "is deprecated: keep model.head only")
    model["head"] = head
    raw["model"] = model
    if first_process():
        print(f"seqlab: qa.head is deprecated; read as model.head: {head} (write it so)",
              file=sys.stderr)
    return raw


@register_task("qa")
class QATask(Task):
    """Span QA behind the task protocol (:class:`seqlab.tasks.Task`)."""

    primary_metric = "F1"
    pipeline_tag = "question-answering"
    title = "Question Answering"
    report_split = "dev"  # QA runs score their held-out questions as dev
    head_contract = QAHeadContract  # what its heads implement (seqlab.heads.contracts)

    @classmethod
    def report_sections(cls, data: dict) -> tuple[list[str], dict]:
        from .qa_report import qa_sections

        return qa_sections(data)
    unit_name = "questions"
    default_head = "pointer"
    prediction_ext = "jsonl"
    config_sections = {"qa": QAConfig}
    cli_options = {"predict": [
        CliOption(("--question",), "QA: the question"),
        CliOption(("--context-file",), "QA: a UTF-8 file holding the context")]}

    def __init__(self, cfg: Config, tokenizer, splits: dict[str, list[QAExample]], language: str):
        self.cfg, self.tokenizer, self.splits, self.language = cfg, tokenizer, splits, language
        self.head = get_head(cfg.model.head)(cfg)
        self.head.build_loss()
        self._cache: dict[str, list[dict]] = {}

    @classmethod
    def upgrade_config(cls, raw: dict) -> dict:
        return _deprecated_head(raw)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if cfg.data.dataset and (problem := unknown_dataset(cfg.data.dataset, "qa",
                                                             "data.train_file/dev_file")):
            raise ConfigError(f"data.dataset: {problem}")
        q = cfg.qa
        if q.max_query_length < 1 or q.doc_stride < 0:
            raise ConfigError("qa.max_query_length: expected >= 1, qa.doc_stride: expected >= 0")
        room = cfg.model.max_length - q.max_query_length - 3  # [CLS] question [SEP] context [SEP]
        if room <= q.doc_stride:
            raise ConfigError(
                f"qa.doc_stride: {q.doc_stride} leaves windows no room to advance: model.max_length "
                f"{cfg.model.max_length} - qa.max_query_length {q.max_query_length} - 3 special "
                f"tokens = {room} context subwords, which must be more than qa.doc_stride")

    @classmethod
    def model_inputs(cls, model_config) -> list[str]:
        extra = ["token_type_ids"] if getattr(model_config, "type_vocab_size", 0) > 1 else []
        return ["input_ids", "attention_mask", *extra]

    @classmethod
    def from_config(cls, cfg: Config) -> QATask:
        from ..models import load_tokenizer

        d = cfg.data
        splits, language = load_qa(d.dataset, d.data_dir, train_split=d.train_split,
                                   eval_split=d.eval_split, train_file=d.train_file,
                                   eval_file=d.dev_file, options=d)
        if "train" not in splits:
            raise DataError("no training questions: set data.dataset or data.train_file")
        splits["train"] = trainable(splits["train"])
        if d.limit:
            splits["train"] = splits["train"][: d.limit]
        if d.eval_limit and "dev" in splits:
            splits["dev"] = splits["dev"][: d.eval_limit]
        return cls(cfg, load_tokenizer(cfg.model.encoder, max_length=cfg.model.max_length), splits, language)

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

    @torch.inference_mode()
    def predict(self, model, examples: list[QAExample], *, device=None, progress: bool = True,
                batch_size: int | None = None, dtype: torch.dtype | None = None
                ) -> dict[str, dict]:
        """``{question id: {"text", "start", "end", "score"}}``, windows merged."""
        q = self.cfg.qa
        feats = encode(self.tokenizer, examples, self.cfg, with_labels=False)
        if device is None:
            device = getattr(model, "device", None) or next(model.parameters()).device
        device = torch.device(device)
        was_training = model.training
        model.eval()
        types = getattr(getattr(model, "config", None), "type_vocab_size", 0) > 1
        best: dict[int, tuple] = {}
        null: dict[int, float] = {}
        order = sorted(range(len(feats)), key=lambda k: feats[k]["length"])
        bs = batch_size or self.cfg.train.eval_batch_size
        precision = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                     else torch.autocast(device.type, enabled=False))
        for b in tqdm(range(0, len(order), bs), desc="predicting", unit="batch",
                      disable=not progress, leave=False):
            chunk = [feats[k] for k in order[b: b + bs]]
            batch = {k: v.to(device) for k, v in self.collate(chunk).items()}
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
            if types and "token_type_ids" in batch:
                inputs["token_type_ids"] = batch["token_type_ids"]
            with precision:
                out = model(**inputs)
            for row, f in enumerate(chunk):
                cand, null_score = self.head.window_answer(out, row, f)
                ex = f["example"]
                null[ex] = min(null.get(ex, math.inf), null_score)
                if cand is not None and (ex not in best or cand[0] > best[ex][0]):
                    best[ex] = cand
        if was_training:
            model.train()
        preds = {}
        for i, ex in enumerate(examples):
            if i not in best or (q.version_2 and null[i] - best[i][0] > q.null_threshold):
                preds[ex.id] = {"text": "", "start": None, "end": None, "score": null.get(i)}
                continue
            score, s, e = best[i]
            preds[ex.id] = {"text": ex.context[s:e], "start": s, "end": e, "score": round(score, 4)}
        return preds

    def question_scores(self, ex: QAExample, text: str) -> tuple[float, float]:
        """A prediction's exact match and F1 against the question's references."""
        if self.language == "zh":
            return cmrc_em_f1(text, ex.references)
        return squad_em_f1(text, ex.references, version="2.0" if self.cfg.qa.version_2 else "1.1")

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
        em = f1 = 0.0
        records = []
        for ex, p in zip(examples, values):
            e, f = self.question_scores(ex, p["text"])
            em, f1 = em + e, f1 + f
            records.append({"id": ex.id, "article": ex.title, "question": ex.question,
                            "context": ex.context, "answers": ex.references,
                            "prediction": p["text"], "start": p["start"], "end": p["end"],
                            "score": p["score"], "exact_match": e, "f1": f})
        if out_file is not None and (accelerator is None or accelerator.is_main_process):
            with open(out_file, "w", encoding="utf-8") as fh:
                for r in records:
                    fh.write(dumps_line(r))
        n = max(1, len(examples))
        return {"exact_match": em / n, "f1": f1 / n, "questions": len(examples)}

    @staticmethod
    def summary(result: dict) -> dict:
        return {"exact_match": result["exact_match"], "f1": result["f1"]}

    def save_extra(self, directory: Path) -> None:
        from .. import __version__

        write_json(directory / "seqlab.json", {
            "seqlab_version": __version__, "task": "qa", "language": self.language,
            "dataset": self.cfg.data.dataset, "max_length": self.cfg.model.max_length,
            **self.head.meta()})

    # ----------------------------------------------------------------- the CLI

    @classmethod
    def cli_evaluate(cls, opts: EvaluateOptions, run: Run) -> int:
        return _evaluate_cli(opts, run)

    @classmethod
    def cli_predict(cls, opts: PredictOptions, run: Run) -> int:
        return _predict_cli(opts, run)

    @classmethod
    def predictor(cls, run: Run, opts: PredictOptions) -> QAPredictor:
        return QAPredictor(run, opts)

    # ----------------------------------------------------------------- the study

    @classmethod
    def card_metrics(cls, split_metrics: dict) -> list[tuple[str, float, str]]:
        return [("f1", 100 * split_metrics["f1"], "F1"),
                ("exact_match", 100 * split_metrics["exact_match"], "exact match")]

    @classmethod
    def study_metrics(cls, split_metrics: dict) -> dict:
        return {"f1": split_metrics["f1"], "exact_match": split_metrics["exact_match"]}

    @classmethod
    def study_split(cls, run_dir: Path, split: str, decoding: str | None = None
                    ) -> StudySplit | None:
        import numpy as np

        from ..files import open_text

        path = cls.prediction_file(run_dir, split)
        if path is None:
            return None
        counts, docs = [], []
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                try:
                    r = json.loads(line)
                    counts.append((r["f1"], r["exact_match"], 1.0))
                    docs.append(r["article"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError("expected a QA prediction line (id, article, f1, "
                                    "exact_match, ...)", str(path), lineno) from None
        return StudySplit(np.asarray(counts, dtype=np.float64).reshape(-1, 3), documents=docs)

    @classmethod
    def study_scores(cls) -> dict:
        """Mean F1 and exact match over questions from summed ``(F1, exact match, questions)``."""
        import numpy as np

        def mean(c, k):
            return np.where(c[..., 2] > 0, c[..., k] / np.maximum(c[..., 2], 1), 0.0)

        return {"f1": lambda c: mean(c, 0), "exact_match": lambda c: mean(c, 1)}


class QAPredictor(Predictor):
    """``{"question": ..., "context": ...}`` in, the answer (text, character span, score) out, as
    ``seqlab predict --question --context-file`` gives it."""

    form = "question"

    def __init__(self, run: Run, opts: PredictOptions):
        from ..export import prediction_model

        self.task = _task_for(run, {}, run.meta["language"])
        self.model = prediction_model(run, opts)
        self.batch_size = opts.batch_size

    def parse(self, payload, limits):
        if not isinstance(payload, dict) or not {"question", "context"} <= set(payload):
            raise RequestError(422, 'expected a JSON object {"question": "...", "context": "..."}')
        q, c = payload["question"], payload["context"]
        if not isinstance(q, str) or not isinstance(c, str):
            raise RequestError(422, '"question" and "context" must be strings')
        if not c.strip() or not q.strip():
            raise RequestError(422, "the question and the context must not be empty")
        if len(c) > limits.max_chars or len(q) > limits.max_chars:
            raise RequestError(413, f"the context has {len(c)} characters; at most {limits.max_chars}")
        return [(q, c)]

    def size(self, item) -> int:
        return len(item[1])

    def predict(self, items: list[tuple[str, str]]) -> list[dict]:
        examples = [QAExample(f"q{k}", "", c, q, []) for k, (q, c) in enumerate(items)]
        preds = self.task.predict(self.model, examples, progress=False, batch_size=self.batch_size)
        return [{"question": q, "answer": preds[f"q{k}"]["text"], "start": preds[f"q{k}"]["start"],
                 "end": preds[f"q{k}"]["end"], "score": preds[f"q{k}"]["score"]}
                for k, (q, _) in enumerate(items)]

    def respond(self, results: list[dict]) -> dict:
        return results[0]


def _task_for(run: Run, splits: dict, language: str) -> QATask:
    from ..models import load_tokenizer

    cfg = run.config
    cfg.model.max_length = run.meta["max_length"]
    return QATask(cfg, load_tokenizer(str(run.directory)), splits, language)


def _evaluate_cli(opts: EvaluateOptions, run: Run) -> int:
    from ..export import prediction_model

    if opts.bf16:
        raise SeqlabError("--bf16 is available for NER models only")
    name = f"{opts.dataset}-{opts.split}" if opts.dataset else Path(opts.file).stem
    out = evaluate_output(opts.output, run.directory, name, "jsonl")
    if opts.dataset:
        splits, language = load_qa(opts.dataset, opts.data_dir,
                                   eval_split="dev" if opts.split == "test" else opts.split,
                                   roles=("dev",))
        examples = splits["dev"]
    else:
        examples, language = read_squad(opts.file)[0], run.meta["language"]
    run.config.train.eval_batch_size = opts.batch_size
    task = _task_for(run, {"eval": examples}, language)
    model = prediction_model(run, opts)
    result = task.evaluate(model, "eval", out_file=out, progress=opts.progress)
    print(f"{name}: {result['questions']} questions, EM {100 * result['exact_match']:.2f}, "
          f"F1 {100 * result['f1']:.2f}")
    print(f"predictions written to {out}")
    return 0


def _predict_cli(opts: PredictOptions, run: Run) -> int:
    from ..export import prediction_model

    if opts.bf16:
        raise SeqlabError("--bf16 is available for NER models only")
    question, context_file = opts.extra.get("question"), opts.extra.get("context_file")
    if not question or not context_file:
        raise SeqlabError("a QA model needs --question and --context-file")
    out_path = check_output_file(opts.output)
    context = read_text_file(context_file, what="--context-file")
    if not context.strip():
        raise SeqlabError(f"--context-file {context_file}: the context is empty; there is "
                          "nothing to answer from")
    ex = QAExample("q", "", context, question, [])
    task = _task_for(run, {}, run.meta["language"])
    model = prediction_model(run, opts)
    pred = task.predict(model, [ex], progress=False, batch_size=opts.batch_size)["q"]
    line = dumps_line({"question": question, "answer": pred["text"], "start": pred["start"],
                       "end": pred["end"], "score": pred["score"]})
    if out_path is not None:
        from ..files import write_text

        write_text(out_path, line)
    else:
        sys.stdout.write(line)
    return 0
