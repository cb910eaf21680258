"""The engine registry: one class per way of running the encoder's transformer, looked up by name.

An engine prepares the loaded model (its precision, its device) and gives the runner that turns a batch's
ids and mask into the outputs pooling reads, or None for eager torch. Adding an engine is one class and one
row of ENGINE_TYPES; the encoder never branches on an engine's name.

The ONNX graph is exported once from the model folder (the transformer only: last hidden state,
plus the first layer's hidden state or the pooler output when the pooling needs them) and cached
under a key of the folder's fingerprint, so a changed folder is never served by a stale export.
The TorchScript graph (bf16 on a CPU) is traced when the encoder loads. Either way pooling and the
sentence-transformers modules after it run in torch as for the torch engine. The OpenVINO engines convert the
same module to OpenVINO IR, cached the same way (models/openvino_runner.py).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from .engines import F32_FRONT, INT8
from .errors import ModelFolderError
from .openvino_runner import PRECISION, OpenVinoRunner, Stage
from .packed import PackedBack, PackedBert, PackedFront

log = logging.getLogger(__name__)


def quantize_int8(src: Path, dst: Path, reduce_range: bool, exclude: list[str] | None = None) -> Path:
    """Dynamic int8 quantisation of an fp32 export's MatMul weights, per output channel; `reduce_range`
    keeps weights to 7 bits, so the int16 pair sums of CPUs without VNNI never saturate and the vectors are
    the same on every x86 CPU. `exclude`: MatMul nodes left fp32 (benchmarks/int8_probe.py tries mixes)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude or [])
    return dst


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whitevec" / "engines"


class _Transformer(torch.nn.Module):
    """What is exported: the transformer's outputs that the pooling reads."""

    def __init__(self, model: torch.nn.Module, first: bool, pooler: bool) -> None:
        super().__init__()
        self.model, self.first, self.pooler = model, first, pooler

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=self.first,
                         return_dict=True)
        extra = [out.hidden_states[1]] if self.first else []
        extra += [out.pooler_output] if self.pooler else []
        return (out.last_hidden_state, *extra)


#: The packed layout's tag in export cache keys (models/packed.py): bump it when a change there changes the graph.
PACKED_TAG = "-packed1"


def transformer_module(model: torch.nn.Module, first: bool, pooler: bool, packed: bool) -> torch.nn.Module:
    """The module an engine runs or converts: PackedBert (only attention runs the batch's padding), or Hugging
    Face's own padded forward."""
    return (PackedBert if packed else _Transformer)(model, first, pooler).eval()


R = TypeVar("R", bound="Runner")


def best_layout(model: torch.nn.Module, pooling: str, make: Callable[[bool], R], where: str,
                tolerance: float = 1e-3, packed: bool = True) -> R:
    """`make(True)`, the engine on the packed layout, where the model is a plain BERT and the runner gives
    Hugging Face's outputs on a batch of mixed lengths (within `tolerance`); else `make(False)`, with the
    reason in the log. `packed` False: the padded layout only."""
    if packed and PackedBert.fits(model):
        first, pooler = pooling == "first-last-avg", pooling == "pooler"
        try:
            runner = make(True)
            check(_Transformer(model, first, pooler).eval(),
                  lambda ids, mask: _outputs(runner(ids, mask), first, pooler), model, tolerance)
            return runner
        except Exception as exc:  # noqa: BLE001 - whatever a packed export or trace raises, the padded forward serves
            log.warning("%s: the packed forward cannot be used (%s); running the padded one", where, exc)
    return make(False)


def check(reference: torch.nn.Module, run: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]],
          model: torch.nn.Module, tolerance: float) -> None:
    """TraceMismatch unless `run` gives `reference`'s outputs on a batch of three rows of other ids and lengths
    (the first and last padded), each token's vector within `tolerance` of the reference's, relative to its
    length (1e-3: the same precision; bf16 against float32 needs more). Padding is not compared: it is not read."""
    ids, mask = _check_batch(int(getattr(getattr(model, "config", None), "vocab_size", 100)))
    with torch.inference_mode():
        wants, gots = reference(ids, mask), run(ids, mask)
        if len(wants) != len(gots) or any(w.shape != g.shape for w, g in zip(wants, gots)):
            raise TraceMismatch("the graph gives other outputs than Hugging Face's forward")
        for want, got in zip(wants, gots):
            if want.dim() == 3:  # hidden states: the text tokens only
                want, got = want[mask.bool()], got[mask.bool()]
            want, got = want.float(), got.float()
            if ((got - want).norm(dim=-1) > tolerance * want.norm(dim=-1) + 1e-4).any():
                raise TraceMismatch("the graph differs from Hugging Face's forward on a batch of another shape")


def _outputs(out: SimpleNamespace, first: bool, pooler: bool) -> tuple[torch.Tensor, ...]:
    """A runner's outputs object as _Transformer's tuple."""
    return (out.last_hidden_state, *([out.hidden_states[1]] if first else []), *([out.pooler_output] if pooler else []))


class OnnxRunner:
    """Runs the transformer with ONNX Runtime; returns an outputs object the Pooling step reads."""

    def __init__(self, model: torch.nn.Module, fingerprint: str, pooling: str, engine: str,
                 cache_dir: Path | None = None, threads: int | None = None, packed: bool = False) -> None:
        if engine != "onnx" and engine not in INT8:
            raise ValueError(f"unknown ONNX engine {engine!r}")
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a hard dependency
            raise ModelFolderError("engine onnx needs the onnxruntime package: pip install onnxruntime") from exc
        self.first, self.pooler = pooling == "first-last-avg", pooling == "pooler"
        outputs = "last" + ("-first" if self.first else "") + ("-pooler" if self.pooler else "")
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = cache / f"{fingerprint}-{outputs}{PACKED_TAG if packed else ''}-{engine}.onnx"
        if not self.path.is_file():
            self._build(transformer_module(model, self.first, self.pooler, packed), engine, cache)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # ORT's threads busy-wait between runs by default, taking the cores FAISS needs for the
        # searches that follow each encode: /search at 32 clients went 65 -> 77 per s without it,
        # /v1/embeddings 8 x 32 stayed within noise (350 vs 337 sentences/s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def _build(self, module: torch.nn.Module, engine: str, cache: Path) -> None:
        """Export (and quantise) into a temp file, then rename: a crash never leaves a half file."""
        cache.mkdir(parents=True, exist_ok=True)
        tag = f".tmp-{os.getpid()}"
        fp32 = self.path.with_name(self.path.stem + f"{tag}.fp32.onnx")
        names = ["last"] + (["first"] if self.first else []) + (["pooler"] if self.pooler else [])
        log.info("exporting the model to ONNX for engine %s (once, cached in %s)", engine, cache)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes about shapes: the axes are declared dynamic
                self._export(module, fp32, names)
            if engine in INT8:
                done = quantize_int8(fp32, self.path.with_name(self.path.stem + f"{tag}.int8.onnx"), **INT8[engine])
                fp32.unlink()
            else:
                done = fp32
            os.replace(done, self.path)
        finally:
            for leftover in cache.glob(self.path.stem + f"{tag}*"):
                leftover.unlink(missing_ok=True)

    @staticmethod
    def _export(module: torch.nn.Module, path: Path, names: list[str]) -> None:
        axes = {0: "batch", 1: "tokens"}
        ids, mask = _padded(2, 8, 5)
        torch.onnx.export(module, (ids, mask), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=names,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                        **{n: ({0: "batch"} if n == "pooler" else axes) for n in names}},
                          opset_version=17, dynamo=False)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        feeds = {"input_ids": input_ids.numpy().astype(np.int64), "attention_mask": attention_mask.numpy().astype(np.int64)}
        outs = [torch.from_numpy(o) for o in self.session.run(None, feeds)]
        last = outs.pop(0)
        first = outs.pop(0) if self.first else None
        pooler = outs.pop(0) if self.pooler else None
        return SimpleNamespace(last_hidden_state=last, hidden_states=[None, first, last], pooler_output=pooler)


class TracedRunner:
    """Runs the transformer as a frozen TorchScript graph: the same kernels as eager torch (the same vectors),
    without Python between the ops, and without holding the GIL during the forward, so the event loop of a
    server on a small machine is not starved while the model runs (measured: docs/performance.md). `packed`:
    trace PackedBert (models/packed.py: only attention runs the batch's padding) rather than Hugging Face's
    forward.

    A trace records one path through the model's Python; a model whose forward branches on the batch's
    shape would be wrong for other shapes. So the graph is checked against Hugging Face's eager forward on a
    batch of another shape and other padding, and TraceMismatch says it cannot be used."""

    def __init__(self, model: torch.nn.Module, pooling: str, packed: bool = False) -> None:
        self.first, self.pooler, self.packed = pooling == "first-last-avg", pooling == "pooler", packed
        module = transformer_module(model, self.first, self.pooler, packed)
        verbosity = hf_logging.get_verbosity()
        # tracing reads every property of the model, `loss_function` too, which warns of a training loss no
        # encoder has ("loss_type=None ... ForCausalLMLoss"): it read like a model error at every start
        hf_logging.set_verbosity_error()
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # tracer notes about shapes: what matters is checked below
                self.graph = torch.jit.freeze(torch.jit.trace(module, _padded(2, 8, 5), check_trace=False))
        finally:
            hf_logging.set_verbosity(verbosity)
        check(_Transformer(model, self.first, self.pooler).eval(), self.graph, model, 1e-3)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        outs = list(self.graph(input_ids, attention_mask))
        last = outs.pop(0)
        first = outs.pop(0) if self.first else None
        pooler = outs.pop(0) if self.pooler else None
        return SimpleNamespace(last_hidden_state=last, hidden_states=[None, first, last], pooler_output=pooler)


class TraceMismatch(Exception):
    """The model cannot run traced (its forward depends on the batch's shape)."""


class Runner(Protocol):
    """(input ids, attention mask) of one padded batch → the transformer outputs the pooling step reads."""

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace: ...


@dataclass(frozen=True)
class RunContext:
    """What an engine may need beside the model: its fingerprint (cache keys), pooling (which outputs),
    device, the export cache, a name for log lines, and a way to run work on the process's model thread
    (torch's OpenMP pool belongs to the thread that first runs a model: a trace made elsewhere starts another)."""

    fingerprint: str
    pooling: str
    device: torch.device
    cache_dir: Path | None
    where: str
    on_model_thread: Callable[[Callable[[], Any]], Any]


class Engine(Protocol):
    """One inference engine, as ENGINE_TYPES lists it."""

    def prepare(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The loaded float32 model (on `device`) made ready for this engine; ModelFolderError when the
        engine cannot run on `device`."""
        ...

    def runner(self, model: torch.nn.Module, ctx: RunContext) -> Runner | None:
        """What runs the prepared model's transformer; None: the encoder's own eager forward."""
        ...


class TorchEngine:
    """torch: float32, eager, on any device."""

    def prepare(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return model

    def runner(self, model: torch.nn.Module, ctx: RunContext) -> Runner | None:
        return None


class HalfEngine:
    """torch-half: bf16 (fp16 on GPUs without bf16): tensor cores, half the memory; other vectors. On a CPU
    too (slowly without bf16 instructions), so a version built on a GPU is still served at its own
    precision there, and traced there (TorchScript: no Python, nor the GIL, between the ops)."""

    def prepare(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        cuda = device.type == "cuda"
        return model.to(torch.float16 if cuda and not torch.cuda.is_bf16_supported() else torch.bfloat16)

    def runner(self, model: torch.nn.Module, ctx: RunContext) -> Runner | None:
        if ctx.device.type != "cpu":
            return None
        return ctx.on_model_thread(lambda: _traced_or_eager(model, ctx))


def _traced_or_eager(model: torch.nn.Module, ctx: RunContext) -> Runner | None:
    """A TracedRunner, or None (eager) for a model whose forward cannot be traced, said in the log."""
    try:
        return best_layout(model, ctx.pooling, lambda packed: TracedRunner(model, ctx.pooling, packed), ctx.where)
    except (TraceMismatch, RuntimeError) as exc:
        log.warning("%s runs eager, not traced: %s", ctx.where, exc)
        return None


class _CpuEngine:
    """An engine that runs the float32 model on the CPU only, under its own name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def prepare(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if device.type != "cpu":
            raise ModelFolderError(f"engine {self.name} runs on the CPU; use engine torch on {device}")
        return model


class OnnxEngine(_CpuEngine):
    """onnx (fp32: torch's vectors), onnx-int8 and onnx-int8-rr: ONNX Runtime on the CPU, the export cached
    by the model's fingerprint."""

    def runner(self, model: torch.nn.Module, ctx: RunContext) -> Runner | None:
        # int8 quantises the graph's MatMul weights: the packed graph's 2-D projections export as Gemm, which
        # the recipe (and benchmarks/int8_probe.py's layer groups) do not reach, so int8 keeps the padded one
        return best_layout(model, ctx.pooling, lambda packed: OnnxRunner(
            model, ctx.fingerprint, ctx.pooling, self.name, ctx.cache_dir, packed=packed), ctx.where,
            packed=self.name not in INT8)


class OpenVinoEngine(_CpuEngine):
    """openvino (fp32: torch's vectors), openvino-bf16 and openvino-mixed: OpenVINO on the CPU, the IR cached by
    the model's fingerprint (one IR for openvino and openvino-bf16: the precision is chosen when it is compiled).
    openvino-mixed cuts a packed BERT after its first layer (F32_FRONT) and compiles the cut at f32, the rest at
    bf16; a model it cannot pack or cut (one layer, a packed graph that fails its check) runs as one padded graph
    at f32, the precision that keeps search results, said in the log."""

    def runner(self, model: torch.nn.Module, ctx: RunContext) -> Runner | None:
        first, pooler = ctx.pooling == "first-last-avg", ctx.pooling == "pooler"
        names = ["last"] + (["first"] if first else []) + (["pooler"] if pooler else [])
        cache = Path(ctx.cache_dir) if ctx.cache_dir is not None else default_cache_dir()
        front = F32_FRONT.get(self.name)
        bf16 = PRECISION[self.name] == "bf16" or front is not None

        def make(packed: bool) -> OpenVinoRunner:
            key = ctx.fingerprint + (PACKED_TAG if packed else "")
            if packed and front is not None:
                bert = PackedBert(model, first, pooler).eval()
                head, tail = PackedFront(bert, front), PackedBack(bert, front)
                width = int(model.config.hidden_size)
                stages = [Stage(head, f"{key}-front{front}", head.outputs, "f32"),
                          Stage(tail, f"{key}-back{front}", tail.outputs, "bf16", width=width)]
            else:
                if front is not None:
                    log.warning("%s: %s runs this model as one graph at f32", ctx.where, self.name)
                stages = [Stage(transformer_module(model, first, pooler, packed), key, names, PRECISION[self.name])]
            return OpenVinoRunner(stages, self.name, cache)

        return best_layout(model, ctx.pooling, make, ctx.where, tolerance=0.1 if bf16 else 1e-3)


#: Every engine by the name WHITEVEC_ENGINE and the manifests use (models/engines.py: what auto picks).
ENGINE_TYPES: dict[str, Engine] = {
    "torch": TorchEngine(),
    "torch-half": HalfEngine(),
    "onnx": OnnxEngine("onnx"),
    "onnx-int8": OnnxEngine("onnx-int8"),
    "onnx-int8-rr": OnnxEngine("onnx-int8-rr"),
    "openvino": OpenVinoEngine("openvino"),
    "openvino-bf16": OpenVinoEngine("openvino-bf16"),
    "openvino-mixed": OpenVinoEngine("openvino-mixed"),
}


def _padded(rows: int, tokens: int, short: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs with one row padded after `short` tokens, so the trace and its check see an attention mask."""
    ids = torch.full((rows, tokens), 5, dtype=torch.long)
    mask = torch.ones(rows, tokens, dtype=torch.long)
    mask[-1, short:] = 0
    ids[-1, short:] = 0
    return ids, mask


def _check_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of 6, 11 and 3 tokens of different ids, the first and last padded: a layout that mixed up
    rows or places, or kept a shape it was traced with, shows."""
    ids = 1 + (torch.arange(33).view(3, 11) * 7) % max(1, vocab - 1)
    mask = torch.zeros(3, 11, dtype=torch.long)
    for row, n in enumerate((6, 11, 3)):
        mask[row, :n] = 1
    return ids * mask, mask
