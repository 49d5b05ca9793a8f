"""Small stand-ins of the encoder families users bring, built offline: a tokenizer trained with
``tokenizers`` on the given texts, wrapped in the family's transformers tokenizer class, and a
random two-layer model of the family's class, saved with ``save_pretrained``.

The stand-ins keep what makes each family different for word alignment: the word-start marker
(``Ġ``, ``▁``) or continuation prefix (``##``), case, ``add_prefix_space``, offsets that include
the space before a word (DeBERTa-v2, ModernBERT-style BPE), special tokens spelled like text,
no ``token_type_ids``, and RoBERTa's offset position ids.
"""

from __future__ import annotations

import json
from pathlib import Path

FAMILIES = ("bert-uncased", "bert-cased", "roberta", "roberta-prefix", "xlm-roberta",
            "deberta-v2", "modernbert")

_SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _wordpiece(texts, lowercase: bool, vocab_size: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    return tok.get_vocab()


def _byte_bpe(texts, specials: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _unigram(texts, specials: list[str], unk: str, vocab_size: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(texts, trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token=unk))
    return [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]


def _merges(tok) -> list[tuple[str, str]]:
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
            for m in json.loads(tok.to_str())["model"]["merges"]]


def build_family(family: str, directory: Path, texts: list[str], *, vocab_size: int = 500,
                 max_positions: int = 512) -> Path:
    """Build the ``family`` stand-in in ``directory`` (see :data:`FAMILIES`)."""
    import torch
    import transformers as tf

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if family in ("bert-uncased", "bert-cased"):
        lower = family == "bert-uncased"
        vocab = _wordpiece(texts, lower, vocab_size)
        tok = tf.BertTokenizerFast(vocab=vocab, do_lower_case=lower)
        config = tf.BertConfig(vocab_size=len(vocab), max_position_embeddings=max_positions, **_SIZE)
        model = tf.BertModel(config)
    elif family in ("roberta", "roberta-prefix"):
        bpe = _byte_bpe(texts, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], vocab_size)
        # roberta-base ships add_prefix_space=False: words after the first lose their `Ġ` under
        # is_split_into_words=True, the mismatch seqlab must not have
        tok = tf.RobertaTokenizerFast(vocab=bpe.get_vocab(), merges=_merges(bpe),
                                      add_prefix_space=family == "roberta-prefix")
        config = tf.RobertaConfig(vocab_size=len(bpe.get_vocab()), pad_token_id=1, bos_token_id=0,
                                  eos_token_id=2, type_vocab_size=1,
                                  max_position_embeddings=max_positions + 2, **_SIZE)
        model = tf.RobertaModel(config, add_pooling_layer=False)
    elif family == "xlm-roberta":
        vocab = _unigram(texts, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>", vocab_size)
        tok = tf.XLMRobertaTokenizerFast(vocab=vocab)
        config = tf.XLMRobertaConfig(vocab_size=len(vocab), pad_token_id=1, bos_token_id=0,
                                     eos_token_id=2, type_vocab_size=1,
                                     max_position_embeddings=max_positions + 2, **_SIZE)
        model = tf.XLMRobertaModel(config, add_pooling_layer=False)
    elif family == "deberta-v2":
        vocab = _unigram(texts, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[UNK]", vocab_size)
        tok = tf.DebertaV2TokenizerFast(vocab=vocab)
        # DeBERTa-v3's layout: relative positions only, no token types
        config = tf.DebertaV2Config(vocab_size=len(vocab), max_position_embeddings=max_positions,
                                    relative_attention=True, position_buckets=32,
                                    pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                    type_vocab_size=0, pad_token_id=0, **_SIZE)
        model = tf.DebertaV2Model(config)
    elif family == "modernbert":
        from tokenizers import processors

        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        bpe = _byte_bpe(texts, specials, vocab_size)
        ids = {t: bpe.token_to_id(t) for t in specials}
        # a template post-processor, no ByteLevel offset trimming: a word's first piece
        # ("Ġword") has offsets that include the space before it
        bpe.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
        tok = tf.PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]",
                                         pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                         mask_token="[MASK]", model_input_names=["input_ids",
                                                                                 "attention_mask"])
        config = tf.ModernBertConfig(vocab_size=bpe.get_vocab_size(), pad_token_id=ids["[PAD]"],
                                     cls_token_id=ids["[CLS]"], sep_token_id=ids["[SEP]"],
                                     bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"],
                                     max_position_embeddings=max_positions,
                                     global_attn_every_n_layers=1, local_attention=64, **_SIZE)
        model = tf.ModernBertModel(config)
    else:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    tok.model_max_length = max_positions if family != "deberta-v2" else int(1e30)
    tok.save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


_FIRST = "Peter Angela Takuya Maria John Ngozi Olaf Chen Fatima Lars Sofia Ahmed".split()
_LAST = "Blackburn Merkel Okonkwo Schmidt Tanaka Garcia Novak Haddad Larsen Rossi".split()
_LOC = "Brussels Berlin Lagos Tokyo Madrid Oslo Cairo Lima Perth Dublin Quebec Nairobi".split()
_ORG = ["Acme Corp", "Reuters", "Siemens AG", "United Nations", "Deutsche Bank", "Red Cross",
        "Boeing", "Bayern Munich"]
_TEMPLATES = ["{PER} flew to {LOC} on Monday .", "{ORG} said {PER} would visit {LOC} .",
              "In {LOC} , {PER} met officials of {ORG} .",
              "{PER} , a spokesman for {ORG} , declined to comment .",
              "Shares of {ORG} rose in {LOC} trading .", "{PER} and {PER} left {LOC} ."]


def synthetic_ner(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """``n`` sentences ``(words, IOB2 tags)`` from templates with person, place and
    organisation names: learnable from the words alone, so that a tiny random encoder of any
    family reaches a high F1 in a few epochs."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words, tags = [], []
        for part in rng.choice(_TEMPLATES).split():
            if part in ("{PER}", "{LOC}", "{ORG}"):
                typ = part[1:-1]
                name = {"PER": lambda: [rng.choice(_FIRST), rng.choice(_LAST)],
                        "LOC": lambda: [rng.choice(_LOC)],
                        "ORG": lambda: rng.choice(_ORG).split()}[typ]()
                words += name
                tags += [f"B-{typ}"] + [f"I-{typ}"] * (len(name) - 1)
            else:
                words.append(part)
                tags.append("O")
        out.append((words, tags))
    return out


def write_jsonl(path: Path, sentences) -> Path:
    path.write_text("".join(json.dumps({"tokens": w, "tags": t}) + "\n" for w, t in sentences),
                    encoding="utf-8")
    return path
