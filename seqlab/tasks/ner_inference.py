"""NER inference: sentences (or texts split into words) through a trained model and its head,
batched by length, windows merged; ``seqlab predict``'s reading and writing in blocks, and the
predictor ``seqlab serve`` batches requests through."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.alignment import build_features, subwords_per_word, wrap_ids
from ..files import AtomicOutput, blocks, check_input_files, check_output_file, dumps_line, iter_lines
from ..heads import SentencePrediction, get_head
from . import PredictOptions, Predictor, RequestError, Run

PREDICT_BLOCK_LINES = 2048  # `seqlab predict` reads, predicts and writes this many lines at a time


MAX_PADDING = 0.25  # the share of a prediction batch's positions that may be padding


def length_batches(lengths: Sequence[int], batch_size: int, max_padding: float = MAX_PADDING
                   ) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first.

    Features are sorted by length and a batch takes the next one while it holds fewer than
    ``batch_size`` rows (or more rows of short features, up to ``batch_size * 32`` positions)
    and at most ``max_padding`` of its positions would be padding. Many features of one length
    (a large input) make batches of that length only, with no padding and no attention mask;
    a few of many lengths (the requests a server batches together) make padded batches rather
    than a batch per length.
    """
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    batches: list[list[int]] = []
    real = 0
    for k in order:
        if batches:
            last = batches[-1]
            longest = lengths[last[0]]
            rows = max(batch_size, (batch_size * 32) // max(longest, 1))
            if len(last) < rows and real + lengths[k] >= (1 - max_padding) * longest * (len(last) + 1):
                last.append(k)
                real += lengths[k]
                continue
        batches.append([k])
        real = lengths[k]
    return batches


@torch.inference_mode()
def predict_sentences(model, tokenizer, head, sentences: Sequence[Sequence[str]], *,
                      max_length: int, overlap: int, batch_size: int = 64, device=None,
                      desc: str = "predicting", progress: bool = True,
                      dtype: torch.dtype | None = None, all_decodings: bool = False
                      ) -> dict[str, list[SentencePrediction]]:
    """Every sentence predicted by ``head``: per decoding (the configured one first, the
    others too with ``all_decodings``, as evaluation scores them), a
    :class:`~seqlab.heads.SentencePrediction` per sentence.

    Features are batched by length (:func:`length_batches`), so little compute goes to padding
    (none in a batch of one length, which runs without an attention mask); the windows of a
    long sentence are merged by the head. ``dtype=torch.bfloat16`` runs the
    model under bfloat16 autocast (faster where the hardware has bf16 units, at a small cost in
    precision); None runs it in its own precision, with any autocast around the call switched
    off.
    """
    was_training = model.training
    model.eval()
    if device is None:
        device = getattr(model, "device", None) or next(model.parameters()).device
    device = torch.device(device)
    per_word = subwords_per_word(tokenizer, sentences) if sentences else []
    feats = []  # (sentence, window, feature)
    windows: list[list[tuple[int, int]]] = []
    for si, words in enumerate(per_word):
        fs = build_features(words, None, max_length=max_length, overlap=overlap,
                            wrap=wrap_ids(tokenizer))
        windows.append([tuple(f["window"]) for f in fs])
        feats.extend((si, wi, f) for wi, f in enumerate(fs))
    batches = length_batches([len(f["input_ids"]) for _, _, f in feats], batch_size)
    state = head.start_prediction(windows)
    precision = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                 else torch.autocast(device.type, enabled=False))
    bar = tqdm(total=len(sentences), desc=desc, unit="sent", disable=not progress, leave=False)
    with precision:
        for idx in batches:
            chunk = [feats[k] for k in idx]
            width = len(chunk[0][2]["input_ids"])  # the longest, first
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id or 0, dtype=torch.long)
            keep = torch.zeros((len(chunk), width), dtype=torch.bool)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (_, _, f) in enumerate(chunk):
                n = len(f["input_ids"])
                ids[r, :n] = torch.tensor(f["input_ids"])
                keep[r, :n] = torch.tensor(f["word_index"]) >= 0
                mask[r, :n] = 1
            if bool(mask.all()):  # one length: no padding, no mask
                out = model(input_ids=ids.to(device))
            else:
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
            head.collect_batch(state, out, chunk, keep.to(device))
            bar.update(sum(1 for _, wi, _ in chunk if wi == 0))
    bar.close()
    if was_training:
        model.train()
    return head.finish_prediction(state, windows, [len(w) for w in per_word],
                                  all_decodings=all_decodings)


def predict_words(model, tokenizer, sentences: Sequence[Sequence[str]], *, max_length: int,
                  overlap: int, batch_size: int = 64, device=None, progress: bool = False,
                  dtype: torch.dtype | None = None) -> list[list[tuple[int, float]]]:
    """``(label id, probability)`` of every word under a token classifier's argmax (the softmax
    head with ``eval.decode: argmax``), windows merged."""
    cfg = Config()
    cfg.eval.decode = "argmax"
    id2label = model.config.id2label  # keys are strings in an exported config.json
    labels = [id2label[i] if i in id2label else id2label[str(i)] for i in range(len(id2label))]
    head = get_head("softmax")(cfg, labels)
    preds = predict_sentences(model, tokenizer, head, sentences, max_length=max_length,
                              overlap=overlap, batch_size=batch_size, device=device,
                              progress=progress, dtype=dtype)["argmax"]
    index = {l: i for i, l in enumerate(labels)}
    return [[(index[t], q) for t, q in zip(p.tags, p.probs)] for p in preds]


def head_for_run(run: Run, labels: list[str]):
    """The head of a trained run, configured as the run was (decoding, options)."""
    meta, cfg = run.meta, run.config
    cfg.data.train_scheme = meta["train_scheme"]
    if "allow_nested" in meta:  # what the run decided (eval.allow_nested: auto), not the config
        cfg.eval.allow_nested = "true" if meta["allow_nested"] else "false"
    head = get_head(meta.get("head", "softmax"))(cfg, labels)
    head.data_nested = bool(meta.get("allow_nested", False))
    return head


def predict_cli(opts: PredictOptions, run: Run) -> int:
    from ..data.alignment import split_words
    from ..export import prediction_model
    from ..models import load_tokenizer

    meta = run.meta
    dtype = torch.bfloat16 if opts.bf16 else None
    check_input_files(opts.files)  # before any work
    out_path = check_output_file(opts.output)
    head = head_for_run(run, meta["labels"])
    tokenizer = load_tokenizer(str(run.directory))
    model = prediction_model(run, opts)
    lines = iter_lines(opts.files)
    first = next(lines, None)  # empty input: empty output, exit 0
    if first is None:
        with AtomicOutput(out_path):
            pass
        return 0
    bar = tqdm(desc="predicting", unit="line", disable=not opts.progress)
    with AtomicOutput(out_path) as out:
        # blocks of lines: bounded memory, and output from the first block on
        for block in blocks(_chain_first(first, lines), PREDICT_BLOCK_LINES):
            texts = [text for text, _, _ in block]
            split = [split_words(t, cjk_characters=_cjk_words(meta)) for t in texts]
            preds = predict_sentences(model, tokenizer, head, [w for w, _ in split],
                                      max_length=meta["max_length"], overlap=meta["window_overlap"],
                                      batch_size=opts.batch_size, progress=False, dtype=dtype)
            for text, (_, offsets), pred in zip(texts, split, next(iter(preds.values()))):
                out.write(dumps_line({"text": text,
                                      "entities": entity_records(pred.entities, offsets, text)}))
            out.flush()
            bar.update(len(block))
    bar.close()
    return 0


def _cjk_words(meta: dict) -> bool:
    """How the run splits CJK text: a character a word unless its training words said
    otherwise (runs made before the key: a character a word, as they were)."""
    return bool(meta.get("cjk_characters_as_words", True))


class NerPredictor(Predictor):
    """``{"texts": [...]}`` in, a list of entities per text out: ``seqlab predict``'s words,
    model and decoding, so the same entities."""

    form = "texts"

    def __init__(self, run: Run, opts: PredictOptions):
        from ..export import prediction_model
        from ..models import load_tokenizer

        self.meta = run.meta
        self.head = head_for_run(run, run.meta["labels"])
        self.tokenizer = load_tokenizer(str(run.directory))
        self.model = prediction_model(run, opts)
        self.dtype = torch.bfloat16 if opts.bf16 else None
        self.batch_size = opts.batch_size

    def parse(self, payload, limits):
        if not isinstance(payload, dict) or "texts" not in payload:
            raise RequestError(422, 'expected a JSON object {"texts": ["a text", ...]}')
        texts = payload["texts"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise RequestError(422, '"texts" must be a list of strings')
        if len(texts) > limits.max_texts:
            raise RequestError(413, f"{len(texts)} texts in one request; at most {limits.max_texts}")
        for k, t in enumerate(texts):
            if len(t) > limits.max_chars:
                raise RequestError(413, f"text {k} has {len(t)} characters; at most "
                                        f"{limits.max_chars}")
        return texts

    def size(self, item: str) -> int:
        return len(item)

    def predict(self, texts: list[str | list[str]]) -> list[dict]:
        """Texts (split into words as ``seqlab predict`` splits them) or word lists (joined by
        spaces: the offsets refer to that text)."""
        from ..data.alignment import running_text, split_words

        split, joined = [], []
        for t in texts:
            if isinstance(t, str):
                split.append(split_words(t, cjk_characters=_cjk_words(self.meta)))
                joined.append(t)
            else:
                words = [str(w) for w in t]
                text, starts = running_text(words)
                split.append((words, [(a, a + len(w)) for a, w in zip(starts, words)]))
                joined.append(text)
        preds = predict_sentences(self.model, self.tokenizer, self.head, [w for w, _ in split],
                                  max_length=self.meta["max_length"],
                                  overlap=self.meta["window_overlap"],
                                  batch_size=self.batch_size, progress=False, dtype=self.dtype)
        return [{"text": t, "entities": entity_records(p.entities, offsets, t)}
                for t, (_, offsets), p in zip(joined, split, next(iter(preds.values())))]

    def respond(self, results: list[dict]) -> dict:
        return {"results": results}


def _chain_first(first, rest):
    yield first
    yield from rest


def entity_records(entities, offsets: Sequence[tuple[int, int]], text: str) -> list[dict]:
    """Entities as ``predict`` writes them: text, type, character ``start``/``end`` (half-open)
    and score; nested ones included, in order of position."""
    out = []
    for typ, s, e, score in entities:
        start, end = offsets[s][0], offsets[e - 1][1]
        out.append({"text": text[start:end], "type": typ, "start": start, "end": end,
                    "score": round(score, 4)})
    return out
