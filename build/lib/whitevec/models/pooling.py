"""The four poolings of the BERT-whitening evaluation, as one small saveable step."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ModelFolderError

log = logging.getLogger(__name__)

POOLINGS = ("cls", "pooler", "last-avg", "first-last-avg")
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
        # first-last-avg: hidden_states[0] is the embedding layer, [1] the first transformer layer.
        first = masked_mean(outputs.hidden_states[1], attention_mask)
        last = masked_mean(outputs.hidden_states[-1], attention_mask)
        return (first + last) / 2

    def save(self, folder: Path) -> None:
        (folder / CONFIG_NAME).write_text(json.dumps({"mode": self.mode}) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "Pooling":
        return cls(json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))["mode"])


_ST_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "last-avg"}


def default_pooling(model_dir: Path) -> str:
    """The folder's own pooling: whitevec's config, else sentence-transformers', else first-last-avg."""
    if (model_dir / CONFIG_NAME).is_file():
        return Pooling.load(model_dir).mode
    st_config = _sentence_transformers_pooling_config(model_dir)
    if st_config is None:
        return DEFAULT_POOLING
    for key, mode in _ST_MODES.items():
        if st_config.get(key):
            return mode
    log.warning(
        "model folder %s uses a sentence-transformers pooling whitevec does not implement (%s); "
        "using %s", model_dir, st_config, DEFAULT_POOLING,
    )
    return DEFAULT_POOLING


def _sentence_transformers_pooling_config(model_dir: Path) -> dict | None:
    modules = model_dir / "modules.json"
    candidates = []
    if modules.is_file():
        try:
            for module in json.loads(modules.read_text(encoding="utf-8")):
                if module.get("type", "").endswith("Pooling"):
                    candidates.append(model_dir / module.get("path", "") / "config.json")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ModelFolderError(f"model folder {model_dir} has an unreadable modules.json: {exc}") from exc
    candidates.append(model_dir / "1_Pooling" / "config.json")
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None
