"""The encoder pipeline: tokenize → forward → pool, in length-sorted batches."""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from tqdm.auto import tqdm
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from .errors import ModelFolderError
from .loader import ModelIdentity, bundled_model_dir, fingerprint, resolve_model_dir
from .engines import ENGINES, REFERENCE, EngineChoice, batch_limits, choose_auto
from .pooling import Pooling, default_pooling
from .runners import ENGINE_TYPES, RunContext, Runner
from .st_modules import copy_modules, load_head
from .tokenizers import Batch, TextTokenizer, default_tokenizer

log = logging.getLogger(__name__)
hf_logging.disable_progress_bar()

ProgressFn = Callable[[int, int], None]


@dataclass
class EncodeResult:
    vectors: np.ndarray  # float32, (n, d), pooled, neither whitened nor normalised
    truncated: list[bool]  # True where the text was longer than max_length tokens
    tokens: list[int] = field(default_factory=list)  # tokens the model saw per text, [CLS]/[SEP] included


_MODEL_THREAD: ThreadPoolExecutor | None = None
_MODEL_THREAD_LOCK = threading.Lock()


def model_executor() -> ThreadPoolExecutor:
    """The one thread that runs every inference forward in this process.

    torch's OpenMP pool belongs to the thread that calls it: forwards from two threads (the
    server's batcher, a rebuild job, the start-up demo build) make two pools that fight for
    the same cores. Measured on 2 cores: 379 sentences/s from one thread, 192 when another
    thread had run the model before. So all of them queue here, one batch at a time, which
    also interleaves a rebuild's batches fairly with live requests."""
    global _MODEL_THREAD
    with _MODEL_THREAD_LOCK:
        if _MODEL_THREAD is None:
            _quiet_numpy_blas()
            _MODEL_THREAD = ThreadPoolExecutor(1, thread_name_prefix="whitevec-model")
        return _MODEL_THREAD


def _quiet_numpy_blas() -> None:
    """One thread for numpy's own OpenBLAS (whitening's small matmuls and SVD): its pthreads pool
    busy-waits after each call, stealing the cores torch is using. Measured on 2 cores, HTTP
    8 × 32 texts after a whitening fit: 160 sentences/s with it, 267 with one BLAS thread."""
    ThreadpoolController().select(prefix="libscipy_openblas").limit(limits=1)


def _on_model_thread() -> bool:
    return threading.current_thread().name.startswith("whitevec-model")


def on_model_thread(work: Callable[[], Any]) -> Any:
    """`work()` run on the model thread (at once when called there), its result or exception returned."""
    if _on_model_thread():
        return work()
    return model_executor().submit(work).result()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_engine(engine: str, device: str | torch.device | None) -> EngineChoice:
    """The engine `engine` names on `device`, and why: "auto" is decided by the device and the CPU's flags
    (engines.choose_auto); any other is as given."""
    if engine != "auto":
        return EngineChoice(engine, f"engine {engine} was configured")
    return choose_auto(torch.device(device if device is not None else default_device()).type)


def resolve_engine(engine: str, device: str | torch.device | None) -> str:
    return choose_engine(engine, device).engine


@dataclass(frozen=True)
class EncoderSpec:
    """What decides an encoder's vectors (model folder, pooling, tokenizer, max length, engine) and where
    it runs (device, batch size, engine cache): the one place an Encoder is built from."""

    model_dir: str | Path | None = None
    pooling: str | None = None
    tokenizer: str | None = None
    max_length: int | None = None
    engine: str = "auto"
    device: str | None = None
    batch_size: int | None = None  # none: the engine's (engines.batch_limits)
    engine_cache: Path | None = None

    @classmethod
    def from_manifest(cls, model: dict, **where: Any) -> EncoderSpec:
        """The encoder a version records (its `model` section); `where`: device, batch size, cache."""
        return cls(model["path"], model["pooling"], model["tokenizer"], model["max_length"],
                   model.get("engine", REFERENCE), **where)  # versions from before engines

    def build(self) -> Encoder:
        return Encoder(self.model_dir, pooling=self.pooling, tokenizer=self.tokenizer, max_length=self.max_length,
                       device=self.device, batch_size=self.batch_size, engine=self.engine,
                       engine_cache=self.engine_cache)


class EncoderPool:
    """Encoders shared by everything that serves the same model the same way (collections, versions):
    one copy of the weights per model. Held weakly: an encoder no bundle uses any more is freed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: weakref.WeakValueDictionary[tuple, Encoder] = weakref.WeakValueDictionary()
        self._building: dict[tuple, threading.Lock] = {}

    @staticmethod
    def _key(spec: EncoderSpec) -> tuple:
        path = Path(spec.model_dir).resolve() if spec.model_dir is not None else None
        return path, spec.pooling, spec.tokenizer, spec.max_length, spec.engine, spec.device, spec.engine_cache

    def get(self, spec: EncoderSpec) -> Encoder:
        """The live encoder for `spec`, else a new one; two callers asking for the same spec at once wait
        for one build (loading takes seconds; an ONNX export must not run twice at once)."""
        key = self._key(spec)
        with self._lock:
            found = self._live.get(key)
            building = self._building.setdefault(key, threading.Lock())
        if found is not None:
            return found
        with building:
            with self._lock:
                found = self._live.get(key)
            if found is not None:
                return found
            encoder = spec.build()
            encoder.warm_up()
            concrete = self._key(EncoderSpec(encoder.model_dir, encoder.pooling.mode, encoder.tokenizer.kind,
                                             encoder.max_length, encoder.engine, spec.device, spec.batch_size,
                                             spec.engine_cache))
            with self._lock:  # loaded under another spec meanwhile (its concrete form): keep that one
                found = self._live.get(concrete)
                if found is not None:
                    self._live[key] = found
                    return found
                self._live[key] = encoder
                self._live[concrete] = encoder
            return encoder

    def __len__(self) -> int:
        with self._lock:
            return len({id(e) for e in self._live.values()})


def _default_max_length(model_dir: Path, max_positions: int) -> int:
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        if value:
            return min(int(value), max_positions)
    return min(512, max_positions)


class Encoder:
    """A local BERT-family model turned into sentence vectors.

    Sentences are sorted by token length before batching so each batch pads to
    its own longest member, not to the corpus's; results come back in input order.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        pooling: str | None = None,
        tokenizer: str | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        engine: str = REFERENCE,
        engine_cache: Path | None = None,
    ) -> None:
        if engine not in (*ENGINES, "auto"):
            raise ModelFolderError(f"unknown engine {engine!r}: choose auto or one of {', '.join(ENGINES)}")
        path = resolve_model_dir(model_dir)
        self.model_dir = path
        self.pooling = Pooling(pooling or default_pooling(path))
        self.tokenizer = TextTokenizer(path, tokenizer or default_tokenizer(path))
        self.device = torch.device(device) if device is not None else default_device()
        engine = resolve_engine(engine, self.device)
        self.batch_size = batch_size or batch_limits(engine)[0]
        try:
            model, info = AutoModel.from_pretrained(str(path), local_files_only=True, output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise ModelFolderError(f"model folder {path} could not be loaded: {exc}") from exc
        if self.pooling.mode == "pooler":
            if getattr(model, "pooler", None) is None or any("pooler" in k for k in info["missing_keys"]):
                raise ModelFolderError(
                    f"model folder {path} has no trained pooler weights; choose pooling cls, last-avg or first-last-avg"
                )
        kind = ENGINE_TYPES[engine]
        self.model = kind.prepare(model.eval().to(self.device), self.device)
        head, out_dim = load_head(path, int(model.config.hidden_size))
        self.head = head.to(self.device) if head is not None else None
        max_positions = int(getattr(model.config, "max_position_embeddings", 512))
        self.max_length = max_length or _default_max_length(path, max_positions)
        if not 2 <= self.max_length <= max_positions:
            raise ModelFolderError(f"max_length {self.max_length} is outside 2..{max_positions} for model folder {path}")
        name = "all-MiniLM-L6-v2" if path == bundled_model_dir().resolve() else path.name
        self.identity = ModelIdentity(
            name=name, fingerprint=fingerprint(path), pooling=self.pooling.mode, dim=out_dim
        )
        self.engine = engine
        self._runner: Runner | None = kind.runner(self.model, RunContext(
            self.identity.fingerprint, self.pooling.mode, self.device, engine_cache,
            f"model folder {path} ({engine})", on_model_thread))

    @property
    def dim(self) -> int:
        return self.identity.dim

    def forward(self, batch: Batch) -> torch.Tensor:
        """Pooled vectors for one padded batch; differentiable unless called under inference_mode."""
        cuda = self.device.type == "cuda"
        # pinned host memory lets the copy to the GPU run asynchronously
        input_ids = (batch.input_ids.pin_memory() if cuda else batch.input_ids).to(self.device, non_blocking=cuda)
        mask = (batch.attention_mask.pin_memory() if cuda else batch.attention_mask).to(self.device, non_blocking=cuda)
        first_layer = self._first_layer() if self.pooling.needs_hidden_states else None
        captured: list[torch.Tensor] = []
        handle = None
        if first_layer is not None:  # hidden_states[1] by a hook: not every layer's output kept
            handle = first_layer.register_forward_hook(
                lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out))
        try:
            outputs = self.model(input_ids=input_ids, attention_mask=mask, return_dict=True,
                                 output_hidden_states=self.pooling.needs_hidden_states and first_layer is None)
        finally:
            if handle is not None:
                handle.remove()
        if captured:
            outputs = SimpleNamespace(last_hidden_state=outputs.last_hidden_state,
                                      hidden_states=(None, captured[0], outputs.last_hidden_state))
        pooled = self.pooling(outputs, mask)
        return self.head(pooled.float()) if self.head is not None else pooled

    def _first_layer(self) -> torch.nn.Module | None:
        """The first transformer layer of a BERT-family model (its output is hidden_states[1])."""
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        return layers[0] if isinstance(layers, torch.nn.ModuleList) and len(layers) else None

    def save_modules(self, out_dir: Path) -> None:
        """Carry the folder's sentence-transformers modules (Dense, Normalize) to a saved copy."""
        copy_modules(self.model_dir, out_dir)

    def warm_up(self) -> None:
        """One tiny forward on the model thread, so the first request does not pay for a trace or the engine's
        first-run allocations."""
        self.embed_tokens(self.tokenize(["warm up"])[0])

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Model-ready ids (truncated to max_length) and truncation flags; cost bounded by max_length."""
        return self.tokenizer.encode_truncated(texts, self.max_length)

    def embed_tokens(self, ids: list[list[int]]) -> np.ndarray:
        """Pooled float32 vectors for one batch of ids (rows in the given order), with the engine,
        computed on the process's model thread."""
        return on_model_thread(lambda: self._embed_tokens(ids))

    def _embed_tokens(self, ids: list[list[int]]) -> np.ndarray:
        batch = self.tokenizer.pad(ids, self.max_length)
        with torch.inference_mode():
            if self._runner is None:
                return self.forward(batch).float().cpu().numpy()
            pooled = self.pooling(self._runner(batch.input_ids, batch.attention_mask), batch.attention_mask)
            return (self.head(pooled.float()) if self.head is not None else pooled).float().numpy()

    def encode(
        self,
        texts: list[str],
        batch_size: int | None = None,
        progress: bool = False,
        on_progress: ProgressFn | None = None,
    ) -> EncodeResult:
        """Pooled float32 vectors in input order, with per-text truncation flags."""
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return EncodeResult(out, [], [])
        ids, truncated = self.tokenize(texts)
        order = sorted(range(n), key=lambda i: -len(ids[i]))
        size = batch_size or self.batch_size
        with tqdm(total=n, disable=not progress, desc="encoding", unit="sent") as bar:
            for start in range(0, n, size):
                idx = order[start : start + size]
                out[idx] = self.embed_tokens([ids[i] for i in idx])
                bar.update(len(idx))
                if on_progress is not None:
                    on_progress(min(start + size, n), n)
        n_cut = sum(truncated)
        if n_cut:
            log.info("%d of %d texts were longer than %d tokens and were truncated", n_cut, n, self.max_length)
        return EncodeResult(out, truncated, [len(row) for row in ids])
