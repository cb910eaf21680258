"""sentence-transformers folders: their pooling and the modules after it, applied — never ignored.

A folder's `modules.json` lists Transformer → Pooling → optional Dense / Normalize. The
pooling maps onto whitevec's (cls, mean → last-avg, max); Dense and Normalize run after
pooling exactly as sentence-transformers runs them. Anything else (weighted-mean or
last-token pooling, several pooling modes at once, other module types, unknown activations)
is refused with an error naming it, so a folder never yields different vectors quietly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .errors import ModelFolderError

#: sentence-transformers pooling modes → whitevec pooling (others are refused).
ST_POOLINGS = {"cls": "cls", "mean": "last-avg", "max": "max"}
#: Legacy boolean keys (sentence-transformers < 6) → mode names.
_LEGACY_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": torch.nn.Tanh,
    "torch.nn.modules.linear.Identity": torch.nn.Identity,
    "torch.nn.modules.activation.ReLU": torch.nn.ReLU,
    "torch.nn.modules.activation.GELU": torch.nn.GELU,
    "torch.nn.modules.activation.Sigmoid": torch.nn.Sigmoid,
}


def read_modules(model_dir: Path) -> list[dict] | None:
    """The folder's modules.json entries, or None when it has none."""
    path = model_dir / "modules.json"
    if not path.is_file():
        return None
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
            raise ValueError("expected a list of {type, path} objects")
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"model folder {model_dir} has an unreadable modules.json: {exc}") from exc
    return modules


def _kind(module: dict) -> str:
    return str(module["type"]).rsplit(".", 1)[-1]


def _after_pooling(model_dir: Path, modules: list[dict]) -> list[dict]:
    kinds = [_kind(m) for m in modules]
    if "Pooling" not in kinds:
        return []
    return modules[kinds.index("Pooling") + 1 :]


def st_pooling(model_dir: Path) -> str | None:
    """whitevec's name for the folder's sentence-transformers pooling; None if the folder has none."""
    modules = read_modules(model_dir) or []
    candidates = [model_dir / m.get("path", "") / "config.json" for m in modules if _kind(m) == "Pooling"]
    candidates.append(model_dir / "1_Pooling" / "config.json")
    for path in candidates:
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ModelFolderError(f"model folder {model_dir}: unreadable {path.name} ({exc})") from exc
            modes = _st_modes(config)
            if len(modes) != 1 or modes[0] not in ST_POOLINGS:
                raise ModelFolderError(
                    f"model folder {model_dir} uses sentence-transformers pooling {' + '.join(modes) or 'none'}, "
                    "which whitevec does not implement (it maps exactly one of cls, mean, max); choose a pooling "
                    "explicitly (--pooling / WHITEVEC_POOLING: cls, pooler, last-avg, first-last-avg, max)"
                )
            return ST_POOLINGS[modes[0]]
    return None


def _st_modes(config: dict) -> list[str]:
    """Pooling mode names from either config format (`pooling_mode` or legacy boolean keys)."""
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return [mode]
    if isinstance(mode, list):
        return [str(m) for m in mode]
    return [name for key, name in _LEGACY_KEYS.items() if config.get(key)]


def _dense(model_dir: Path, folder: Path, in_dim: int) -> tuple[torch.nn.Module, int]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        n_in, n_out = int(config["in_features"]), int(config["out_features"])
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFolderError(f"model folder {model_dir}: Dense module {folder.name} has no readable "
                               f"config.json with in_features/out_features ({exc})") from exc
    if n_in != in_dim:
        raise ModelFolderError(f"model folder {model_dir}: Dense module {folder.name} expects {n_in} dims "
                               f"but the pooling gives {in_dim}")
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in ACTIVATIONS:
        raise ModelFolderError(f"model folder {model_dir}: Dense module {folder.name} uses activation "
                               f"{activation}, which whitevec does not implement")
    linear = torch.nn.Linear(n_in, n_out, bias=bool(config.get("bias", True)))
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ModelFolderError(f"model folder {model_dir}: Dense module {folder.name} has no weights")
    try:
        linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    except RuntimeError as exc:
        raise ModelFolderError(f"model folder {model_dir}: Dense module {folder.name} weights do not fit: {exc}") from exc
    return torch.nn.Sequential(linear, ACTIVATIONS[activation]()), n_out


class _Normalize(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, p=2, dim=1)


def load_head(model_dir: Path, in_dim: int) -> tuple[torch.nn.Sequential | None, int]:
    """The modules after pooling as one torch module (None if there are none), and the output dim."""
    modules = read_modules(model_dir)
    if not modules:
        return None, in_dim
    layers: list[torch.nn.Module] = []
    dim = in_dim
    for module in _after_pooling(model_dir, modules):
        kind = _kind(module)
        if kind == "Dense":
            layer, dim = _dense(model_dir, model_dir / module.get("path", ""), dim)
            layers.append(layer)
        elif kind == "Normalize":
            layers.append(_Normalize())
        else:
            raise ModelFolderError(f"model folder {model_dir}: sentence-transformers module {module['type']} "
                                   "after pooling is not supported (only Dense and Normalize are)")
    return (torch.nn.Sequential(*layers).eval() if layers else None), dim


def head_files(model_dir: Path) -> list[Path]:
    """Files that change the vectors after pooling (for the model fingerprint)."""
    modules = read_modules(model_dir)
    if not modules:
        return []
    files = [model_dir / "modules.json"]
    for module in _after_pooling(model_dir, modules):
        folder = model_dir / module.get("path", "")
        files.extend(sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else [])
    return files


def copy_modules(model_dir: Path, out_dir: Path) -> None:
    """Carry modules.json and the pooling and post-pooling module folders to a saved fine-tune."""
    modules = read_modules(model_dir)
    if not modules:
        return
    shutil.copy2(model_dir / "modules.json", out_dir / "modules.json")
    for module in modules:
        sub = module.get("path", "")
        if sub and (model_dir / sub).is_dir():
            shutil.copytree(model_dir / sub, out_dir / sub, dirs_exist_ok=True)
