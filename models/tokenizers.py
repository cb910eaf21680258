"""Text → token ids: plain BERT WordPiece, or WoBERT's jieba words first."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex
import torch
from transformers import AutoTokenizer

from .choices import TOKENIZERS
from .errors import ModelFolderError

CONFIG_NAME = "whitevec_tokenizer.json"

#: A long text is first tokenized as a prefix of max_length × this many characters, cut at
#: whitespace; only when that prefix yields too few tokens is the whole text tokenized.
PREFIX_CHARS_PER_TOKEN = 12


#: A character BERT's text cleaning keeps: not whitespace, U+FFFD, a control, a format or a private-use character.
_KEPT = regex.compile(r"[^\s\p{Cc}\p{Cf}\p{Co}\uFFFD]")


def has_content(text: str) -> bool:
    """Whether BERT's text cleaning leaves any of `text`. It drops whitespace, U+FFFD, controls, format characters
    (U+200B, U+FEFF, ...) and private-use characters, so a text of nothing else encodes as [CLS][SEP] alone: the same
    vector for every such text, and confident-looking neighbours for a query that says nothing. (A format character
    newer than the tokenizer's Unicode tables becomes [UNK] instead, which says no more.) One compiled scan that
    stops at the first kept character: a 20,000-character text of format characters takes well under a ms."""
    return _KEPT.search(text) is not None


@dataclass
class Batch:
    """Padded model inputs plus which rows lost tokens to max_length."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    truncated: list[bool]


class TextTokenizer:
    """Wraps the folder's Hugging Face tokenizer; `wobert` adds jieba word pre-tokenization.

    WoBERT (Su, 2020) keeps a jieba word whole when it is in the vocabulary and
    falls back to ordinary BERT tokenization of that word otherwise.
    """

    def __init__(self, model_dir: Path, kind: str = "bert") -> None:
        if kind not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {kind!r}: choose one of {', '.join(TOKENIZERS)}")
        self.kind = kind
        try:
            self.hf = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelFolderError(f"model folder {model_dir} has no loadable tokenizer: {exc}") from exc
        self.hf.model_max_length = 1 << 30  # we truncate ourselves, and report it
        self.vocab: dict[str, int] = self.hf.get_vocab()
        self.lower = bool(getattr(self.hf, "do_lower_case", False))
        accents = getattr(self.hf, "strip_accents", None)  # BERT: None means "as lowercase does"
        self.strip_accents = self.lower if accents is None else bool(accents)
        if self.hf.cls_token_id is None or self.hf.sep_token_id is None:
            raise ModelFolderError(f"model folder {model_dir} has a tokenizer without [CLS]/[SEP] tokens")
        # BERT's ids straight from the Rust tokenizer: transformers' per-text wrapping of its answer cost more than
        # the tokenizing itself (47 ms against 26 per 1,024 STS-B sentences). A copy, so the settings below stay
        # ours: no truncation (we truncate, and report it) and no padding hidden in tokenizer.json.
        self._rust = None
        if kind == "bert" and getattr(self.hf, "is_fast", False):
            self._rust = copy.deepcopy(self.hf.backend_tokenizer)
            self._rust.no_truncation()
            self._rust.no_padding()
        if kind == "wobert":
            import jieba

            jieba.setLogLevel(logging.WARNING)
            self._jieba = jieba

    def tokenize(self, text: str) -> list[str]:
        """Tokens without special tokens (for inspection and tests)."""
        return self.hf.convert_ids_to_tokens(self._ids(text))

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Each WordPiece token's character span in `text` (no special tokens), for splitting into passages.
        WoBERT's jieba words are counted as the WordPieces they are made of: never fewer than WoBERT's own
        tokens, so a passage cut by these counts always fits."""
        if not getattr(self.hf, "is_fast", False):
            raise ModelFolderError("splitting into passages needs a fast (Rust) tokenizer: the model folder's "
                                   "tokenizer has no character offsets; add its tokenizer.json")
        return [tuple(span) for span in self.hf(text, add_special_tokens=False,
                                                  return_offsets_mapping=True)["offset_mapping"]]

    def normalize(self, text: str) -> str:
        """WoBERT's reference tokenizer lowercases and strips accents before jieba (as BERT's does)."""
        if self.lower:
            text = text.lower()
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        return text

    def _ids(self, text: str) -> list[int]:
        if self.kind == "bert":
            return self.hf(text, add_special_tokens=False)["input_ids"]
        ids: list[int] = []
        for word in self._jieba.lcut(self.normalize(text), HMM=False):
            if word in self.vocab:
                ids.append(self.vocab[word])
            elif word.strip():
                ids.extend(self.hf(word, add_special_tokens=False)["input_ids"])
        return ids

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Full ids with [CLS]/[SEP], untruncated, so callers can sort by length and see truncation."""
        if self._rust is not None:
            return [encoding.ids for encoding in self._rust.encode_batch(list(texts), add_special_tokens=True)]
        cls, sep = self.hf.cls_token_id, self.hf.sep_token_id
        if self.kind == "bert":
            return self.hf(list(texts), add_special_tokens=True)["input_ids"]
        return [[cls, *self._ids(t), sep] for t in texts]

    def encode_truncated(self, texts: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
        """Ids with [CLS]/[SEP], truncated to max_length (keeping [SEP] last), and which texts lost tokens.

        Work is bounded by max_length, not by the text: a long text is tokenized as a prefix
        cut at whitespace (a token boundary for BERT's and jieba's pre-tokenizers, so the
        prefix's tokens are the full text's first tokens); only if the prefix is too short to
        fill max_length is the whole text tokenized.
        """
        window = max_length * PREFIX_CHARS_PER_TOKEN
        heads = [_head(t, window) for t in texts]
        ids = self.encode(heads)
        redo = [i for i, row in enumerate(ids) if heads[i] is not texts[i] and len(row) <= max_length]
        if redo:
            for i, row in zip(redo, self.encode([texts[i] for i in redo])):
                ids[i] = row
        sep = self.hf.sep_token_id
        truncated = [len(row) > max_length for row in ids]
        return [row[: max_length - 1] + [sep] if cut else row for row, cut in zip(ids, truncated)], truncated

    def pad(self, ids: list[list[int]], max_length: int) -> Batch:
        """Truncate to max_length (keeping [SEP] last) and right-pad into tensors."""
        sep, pad_id = self.hf.sep_token_id, self.hf.pad_token_id or 0
        truncated = [len(row) > max_length for row in ids]
        rows = [row[: max_length - 1] + [sep] if cut else row for row, cut in zip(ids, truncated)]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        mask = np.arange(int(lengths.max())) < lengths[:, None]  # one flat copy, not a tensor per row
        input_ids = np.full(mask.shape, pad_id, dtype=np.int64)
        input_ids[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        return Batch(torch.from_numpy(input_ids), torch.from_numpy(mask.astype(np.int64)), truncated)

    def save(self, folder: Path) -> None:
        self.hf.save_pretrained(str(folder))
        (folder / CONFIG_NAME).write_text(json.dumps({"kind": self.kind}) + "\n", encoding="utf-8")


def _head(text: str, window: int) -> str:
    """The text up to the last whitespace within `window` characters, or the text itself."""
    if len(text) <= window:
        return text
    for cut in range(window, window // 2, -1):
        if text[cut].isspace():
            return text[:cut]
    return text


def default_tokenizer(model_dir: Path) -> str:
    """The folder's saved tokenizer kind, else plain BERT."""
    path = model_dir / CONFIG_NAME
    return json.loads(path.read_text(encoding="utf-8"))["kind"] if path.is_file() else "bert"
