"""Text → token ids: plain BERT WordPiece, or WoBERT's jieba words first."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from .errors import ModelFolderError

TOKENIZERS = ("bert", "wobert")
CONFIG_NAME = "whitevec_tokenizer.json"


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
        if self.hf.cls_token_id is None or self.hf.sep_token_id is None:
            raise ModelFolderError(f"model folder {model_dir} has a tokenizer without [CLS]/[SEP] tokens")
        if kind == "wobert":
            import jieba

            jieba.setLogLevel(logging.WARNING)
            self._jieba = jieba

    def tokenize(self, text: str) -> list[str]:
        """Tokens without special tokens (for inspection and tests)."""
        return self.hf.convert_ids_to_tokens(self._ids(text))

    def _ids(self, text: str) -> list[int]:
        if self.kind == "bert":
            return self.hf(text, add_special_tokens=False)["input_ids"]
        ids: list[int] = []
        for word in self._jieba.lcut(text, HMM=False):
            key = word.lower() if self.lower else word
            if key in self.vocab:
                ids.append(self.vocab[key])
            elif word.strip():
                ids.extend(self.hf(word, add_special_tokens=False)["input_ids"])
        return ids

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Full ids with [CLS]/[SEP], untruncated, so callers can sort by length and see truncation."""
        cls, sep = self.hf.cls_token_id, self.hf.sep_token_id
        if self.kind == "bert":
            return self.hf(list(texts), add_special_tokens=True)["input_ids"]
        return [[cls, *self._ids(t), sep] for t in texts]

    def pad(self, ids: list[list[int]], max_length: int) -> Batch:
        """Truncate to max_length (keeping [SEP] last) and right-pad into tensors."""
        sep, pad_id = self.hf.sep_token_id, self.hf.pad_token_id or 0
        truncated = [len(row) > max_length for row in ids]
        rows = [row[: max_length - 1] + [sep] if cut else row for row, cut in zip(ids, truncated)]
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return Batch(input_ids, mask, truncated)

    def save(self, folder: Path) -> None:
        self.hf.save_pretrained(str(folder))
        (folder / CONFIG_NAME).write_text(json.dumps({"kind": self.kind}) + "\n", encoding="utf-8")


def default_tokenizer(model_dir: Path) -> str:
    """The folder's saved tokenizer kind, else plain BERT."""
    path = model_dir / CONFIG_NAME
    return json.loads(path.read_text(encoding="utf-8"))["kind"] if path.is_file() else "bert"
