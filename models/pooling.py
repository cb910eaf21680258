"""The four poolings of the BERT-whitening evaluation (plus max, for sentence-transformers folders
that use it), as one small saveable step."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .choices import POOLINGS
from .st_modules import st_pooling

DEFAULT_POOLING = "first-last-avg"
CONFIG_NAME = "whitevec_pooling.json"


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens only, so padding never changes a sentence's vector."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


@dataclass(frozen=True)
class Pooling:
    """Turns transformer outputs into one vector per sentence."""

    mode: str

    def __post_init__(self) -> None:
        if self.mode not in POOLINGS:
            raise ValueError(f"unknown pooling {self.mode!r}: choose one of {', '.join(POOLINGS)}")

    @property
    def needs_hidden_states(self) -> bool:
        return self.mode == "first-last-avg"

    def __call__(self, outputs, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            return outputs.last_hidden_state[:, 0]
        if self.mode == "pooler":
            return outputs.pooler_output
        if self.mode == "last-avg":
            return masked_mean(outputs.last_hidden_state, attention_mask)
        if self.mode == "max":  # as sentence-transformers: padding can never be the maximum
            hidden = outputs.last_hidden_state
            return hidden.masked_fill(attention_mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
        # first-last-avg: hidden_states[0] is the embedding layer, [1] the first transformer layer.
        first = masked_mean(outputs.hidden_states[1], attention_mask)
        last = masked_mean(outputs.hidden_states[-1], attention_mask)
        return (first + last) / 2

    def save(self, folder: Path) -> None:
        (folder / CONFIG_NAME).write_text(json.dumps({"mode": self.mode}) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "Pooling":
        return cls(json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))["mode"])


def default_pooling(model_dir: Path) -> str:
    """The folder's own pooling: whitevec's config, else sentence-transformers' (mapped, or refused
    when whitevec cannot reproduce it), else first-last-avg."""
    if (model_dir / CONFIG_NAME).is_file():
        return Pooling.load(model_dir).mode
    return st_pooling(model_dir) or DEFAULT_POOLING
