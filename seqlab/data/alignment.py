"""Words <-> subwords, written once: first-subword labels and overlapping windows.

A sentence longer than ``max_length`` subwords is never truncated: it is cut into overlapping
windows of whole words, every window is a model input, and each word's prediction is taken from
the window in which it has the most context on both sides (:func:`merge_windows`).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import re
from collections.abc import Sequence

import torch

IGNORE = -100  # the label of a position no loss or score looks at (torch's ignore_index)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
_CHUNK = re.compile(r"\S+")
# words whose final dot is part of them (CoNLL-2003 writes `Corp.`, `vs.`, `Calif.`): titles,
# months, company forms, US states and a few Latin ones; besides these, a final dot stays on
# initials (`J.`), ordinals (`1.`) and words with dots inside (`U.S.`, `a.m.`)
ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st mt ft lt col gen capt cmdr sgt gov sen rep rev hon pres supt
jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun
inc corp co ltd bros plc assn dept univ est vs etc al approx no nos vol vols pp fig figs
ala ariz ark calif colo conn del fla ga ill ind kan kans ky la md mass mich minn miss mo
mont neb nev okla ore pa penn tenn tex va vt wash wis wyo
""".split())
_CLOSERS = ")]}>\"'"


@functools.cache
def _treebank():
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def _keeps_dot(word: str, last: bool) -> bool:
    """Whether ``word`` (without its final dot) is one whose final dot belongs to it; a number
    that ends the text is a sentence's end, not an ordinal."""
    return bool(word) and (word.lower() in ABBREVIATIONS or "." in word or
                           (word.isdigit() and not last) or (len(word) == 1 and word.isalpha()))


_PLAIN = re.compile(r"\w+(?:-\w+)*")  # letters and digits, single hyphens inside
_LINK = re.compile(r"^([(\[{<\"']*)((?:https?://|www\.)\S+?|[\w.+-]+@[\w-]+(?:\.[\w-]+)+)"
                   r"([.,;:!?)\]}>\"']*)$")


def _chunk_spans(chunk: str, last: bool = False) -> list[tuple[int, int]]:
    """The words of one whitespace-free chunk: NLTK's Treebank rules (punctuation, clitics,
    quotes), with the final dot of an abbreviation, an initial or an ordinal kept on its word
    (the rules would split it, taking every chunk's end for a sentence's end); a web address or
    an e-mail address stays one word, its surrounding punctuation apart."""
    if len(chunk) == 1 or _PLAIN.fullmatch(chunk):  # most chunks: one word, no rule applies
        return [(0, len(chunk))]                     # (`cannot` too, one word in CoNLL)
    link = _LINK.match(chunk)
    if link:
        spans = [(link.start(2), link.end(2))]
        spans = [(k, k + 1) for k in range(link.start(1), link.end(1))] + spans + \
            [(k, k + 1) for k in range(link.start(3), link.end(3))]
        return spans
    spans = list(_treebank().span_tokenize(chunk))
    # a currency's letters stay on its dollar sign (`C$`, `US$`, `HK$`), as in CoNLL-2003
    k = 0
    while k < len(spans) - 1:
        a, b = spans[k], spans[k + 1]
        if chunk[b[0]:b[1]] == "$" and a[1] == b[0] and re.fullmatch(r"[A-Z]{1,3}", chunk[a[0]:a[1]]):
            spans[k: k + 2] = [(a[0], b[1])]
        k += 1
    k = len(spans) - 1
    while k >= 0 and all(c in _CLOSERS for c in chunk[spans[k][0]:spans[k][1]]):
        k -= 1  # the final dot may come before closing brackets and quotes
    if k >= 1 and chunk[spans[k][0]:spans[k][1]] == "." and spans[k - 1][1] == spans[k][0] \
            and _keeps_dot(chunk[spans[k - 1][0]:spans[k - 1][1]], last):
        spans[k - 1: k + 1] = [(spans[k - 1][0], spans[k][1])]
    return spans


def split_words(text: str, *, cjk_characters: bool = True) -> tuple[list[str], list[tuple[int, int]]]:
    """Split raw text into words as CoNLL tokenises them, with half-open character offsets.

    Each whitespace-separated chunk is split by NLTK's Treebank rules (``"(U.S.)"`` ->
    ``(``, ``U.S.``, ``)``; ``John's`` -> ``John``, ``'s``; ``10,000``, ``08:40`` and ``1/2``
    stay whole), keeping the final dot of abbreviations, initials and ordinals; CJK characters
    are one word each (the words of character-level corpora: MSRA, Weibo, Resume) or, with
    ``cjk_characters=False``, a run of them is one word (``東京``: what a model trained on
    whitespace-separated words saw of such text, one word per run). CoNLL-2003's test
    sentences joined by spaces come back as the same words in every sentence
    (``tests/test_data.py``)."""
    words, offsets = [], []
    chunks = list(_CHUNK.finditer(text))
    for n, m in enumerate(chunks):
        chunk, base, last = m.group(), m.start(), n == len(chunks) - 1
        if _CJK.search(chunk):
            parts = [(p.start(), p.end()) for p in re.finditer(
                r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+",
                chunk)]
            spans = []
            for a, b in parts:
                if b - a == 1 and _CJK.match(chunk[a]):
                    if not cjk_characters and spans and spans[-1][1] == a \
                            and _CJK.match(chunk[a - 1]):
                        spans[-1] = (spans[-1][0], b)  # the run goes on
                    else:
                        spans.append((a, b))
                else:
                    spans += [(a + x, a + y) for x, y in _chunk_spans(chunk[a:b], last)]
        else:
            spans = _chunk_spans(chunk, last)
        for a, b in spans:
            words.append(chunk[a:b])
            offsets.append((base + a, base + b))
    return words, offsets


def cjk_character_words(sentences) -> bool:
    """Whether the words of ``sentences`` that hold CJK characters are mostly one character
    (a character-level corpus), so text is split one CJK character a word for it. No CJK word
    at all: False (a run of CJK characters in a text is then one word)."""
    cjk = [w for s in sentences for w in s.tokens if _CJK.search(w)]
    return bool(cjk) and sum(len(w) == 1 for w in cjk) >= len(cjk) / 2


def pad_batch(rows: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the rows to the longest one (dynamic padding): ``input_ids`` with ``pad_id``, an
    ``attention_mask``, ``token_type_ids`` with 0 and ``labels`` with :data:`IGNORE` where the
    rows have them; per-row integers (``start_positions``, ``end_positions``) stacked."""
    width = max(len(r["input_ids"]) for r in rows)
    b = len(rows)
    out = {"input_ids": torch.full((b, width), pad_id, dtype=torch.long),
           "attention_mask": torch.zeros((b, width), dtype=torch.long)}
    fill = {"token_type_ids": 0, "labels": IGNORE}
    for key, value in fill.items():
        if any(key in r for r in rows):
            out[key] = torch.full((b, width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        out["input_ids"][i, :n] = torch.as_tensor(r["input_ids"])
        out["attention_mask"][i, :n] = 1
        for key in fill:
            if key in r:
                out[key][i, :n] = torch.as_tensor(r[key])
    for key in ("start_positions", "end_positions"):
        if key in rows[0]:
            out[key] = torch.tensor([int(r[key]) for r in rows])
    return out


@contextlib.contextmanager
def _no_length_warning():
    """Silence transformers' "Token indices sequence length is longer than the specified maximum"
    while tokenising whole sentences: seqlab windows every one that is longer."""
    logger = logging.getLogger("transformers.tokenization_utils_base")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def running_text(words: Sequence[str]) -> tuple[str, list[int]]:
    """The words joined by single spaces, and each word's first character in that text."""
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    return " ".join(words), starts


def _owner(starts: Sequence[int], ends: Sequence[int], text: str, a: int, b: int) -> int | None:
    """The word a subword with character span ``[a, b)`` belongs to: the word holding its first
    non-space character; a subword of whitespace only (a lone word-start marker such as
    ``Ġ`` or ``▁``, often of zero width) belongs to the word that follows it."""
    while a < b and text[a].isspace():
        a += 1
    k = bisect.bisect_right(starts, a) - 1
    if k >= 0 and a < ends[k]:
        return k
    k = bisect.bisect_left(starts, a)  # whitespace only, between words: the next word
    return k if k < len(starts) else None


def special_ids(tokenizer) -> set[int]:
    """The ids of the tokenizer's special tokens, the unknown token excepted."""
    return set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}


def subwords_per_word(tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Subword ids of each word, as the tokenizer splits the sentence in running text.

    The words are joined by single spaces and the text tokenised in one batched call, each
    subword going to the word its character offsets fall in (:func:`_owner`). A word thus gets
    the pieces the tokenizer gives it inside a sentence, whatever its family: a byte-level BPE
    word after the first keeps its word-start marker (``Ġ``) even where the tokenizer was saved
    with ``add_prefix_space=False``, which ``is_split_into_words=True`` would drop; SentencePiece
    words keep their ``▁``; WordPiece words are split as before. Text that spells a special
    token (``[SEP]``, ``</s>``, ``<mask>``) is encoded as text (``split_special_tokens``), and a
    vocabulary that still turns it into a special piece gives the unknown token instead, so
    input text never changes the model's input structure. A word the tokenizer turns into
    nothing (a lone zero-width space, say) gets the unknown token, so that every word has a
    first subword and receives a prediction.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a fast tokenizer is needed (its offsets map subwords to words)")
    texts = [running_text(s) for s in sentences]
    with _no_length_warning():  # long sentences are cut into windows below
        enc = tokenizer([t for t, _ in texts], add_special_tokens=False, truncation=False,
                        return_offsets_mapping=True, split_special_tokens=True)
    out = []
    unk = tokenizer.unk_token_id
    special = special_ids(tokenizer)
    for i, words in enumerate(sentences):
        text, starts = texts[i]
        ends = [st + len(w) for st, w in zip(starts, words)]
        per_word: list[list[int]] = [[] for _ in words]
        for tok_id, (a, b) in zip(enc["input_ids"][i], enc["offset_mapping"][i]):
            w = _owner(starts, ends, text, a, b)
            if w is not None:
                per_word[w].append(unk if tok_id in special else tok_id)
        for sub in per_word:
            if not sub:
                sub.append(unk)
        out.append(per_word)
    return out


def wrap_ids(tokenizer) -> tuple[int, int]:
    """The ids that open and close a single-sequence model input: ``[CLS]``/``[SEP]`` (BERT,
    DeBERTa, ModernBERT), ``<s>``/``</s>`` (RoBERTa, XLM-R), else the BOS/EOS tokens."""
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if first is None or last is None:
        raise ValueError("the tokenizer has neither CLS/SEP nor BOS/EOS tokens to wrap an input "
                         "in")
    return first, last


def trim_offsets(text: str, offsets: Sequence[tuple[int, int] | None]) -> list[tuple[int, int] | None]:
    """Character offsets without leading or trailing whitespace, whatever the tokenizer's
    convention (DeBERTa-v2/v3 and some BPE tokenizers include the space before a word in its
    first piece); a piece of whitespace only (a lone ``▁`` or ``Ġ``) gets None, as a position
    no character span starts or ends at."""
    out: list[tuple[int, int] | None] = []
    for o in offsets:
        if o is None:
            out.append(None)
            continue
        a, b = o
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        out.append((a, b) if a < b else None)
    return out


def make_windows(lengths: Sequence[int], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Cut words of the given subword lengths into windows of at most ``budget`` subwords.

    Consecutive windows share about ``overlap`` subwords of whole words. A single word longer
    than the budget gets a window of its own (its subwords are cut there, its first kept).

    Returns:
        Half-open word ranges ``[(start, end), ...]`` covering every word.
    """
    n = len(lengths)
    if n == 0:
        return [(0, 0)]
    if sum(lengths) <= budget:
        return [(0, n)]
    overlap = max(0, min(overlap, budget // 2))
    windows = []
    start = 0
    while True:
        end, used = start, 0
        while end < n and (used + lengths[end] <= budget or end == start):
            used += lengths[end]
            end += 1
        windows.append((start, end))
        if end >= n:
            return windows
        nxt, shared = end, 0
        while nxt - 1 > start and shared + lengths[nxt - 1] <= overlap:
            nxt -= 1
            shared += lengths[nxt]
        start = nxt


def build_features(per_word: Sequence[Sequence[int]], labels: Sequence[int] | None, *,
                   max_length: int, overlap: int, wrap: tuple[int, int]) -> list[dict]:
    """Model inputs for one sentence: one feature per window, each wrapped in ``wrap`` (the
    opening and closing ids, :func:`wrap_ids`).

    Each feature has ``input_ids``, ``labels`` (the word's label on its first subword, -100 on the
    others and on special tokens), ``word_index`` (the word's index in the sentence on its first
    subword, -1 elsewhere) and ``window`` (its word range).
    """
    budget = max_length - 2
    cls_id, sep_id = wrap
    feats = []
    for start, end in make_windows([len(w) for w in per_word], budget, overlap):
        ids, labs, widx = [cls_id], [IGNORE], [-1]
        for w in range(start, end):
            sub = list(per_word[w])[: budget]
            ids.extend(sub)
            labs.append(labels[w] if labels is not None else IGNORE)
            labs.extend([IGNORE] * (len(sub) - 1))
            widx.append(w)
            widx.extend([-1] * (len(sub) - 1))
        ids.append(sep_id)
        labs.append(IGNORE)
        widx.append(-1)
        feats.append({"input_ids": ids, "labels": labs, "word_index": widx,
                      "window": [start, end]})
    return feats


def merge_windows(num_words: int, windows: Sequence[tuple[int, int]],
                  window_values: Sequence[dict[int, object]]) -> list[object]:
    """Pick, for each word, the value from the window where it sits farthest from an edge.

    Args:
        num_words: words in the sentence.
        windows: each window's half-open word range.
        window_values: for each window, ``{word_index: value}``.
    """
    best: list[object] = [None] * num_words
    score = [-1] * num_words
    for (start, end), values in zip(windows, window_values):
        for w, value in values.items():
            centred = min(w - start, end - 1 - w)
            if centred > score[w]:
                best[w], score[w] = value, centred
    return best
