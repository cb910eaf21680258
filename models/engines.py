"""Which inference engine runs the encoder's transformer: the names, what `auto` picks here, batch budgets.

`onnx` and `openvino` (fp32) give torch's vectors (to float32 rounding) and are interchangeable with `torch`; the others
(`torch-half`, the int8 engines) give other vectors, so a version records its engine and is always served
with it (see index/versions.py). How each engine runs is in models/runners.py.

`auto` is decided at run time by the device and the CPU's flags (choose_auto): machines differ, and an
engine is picked only where it is both fast and keeps search results within the retrieval contract.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

#: torch: float32 on any device; torch-half: bf16 (fp16 on GPUs without bf16), on a GPU or a CPU; onnx: ONNX
#: Runtime float32 on the CPU; onnx-int8-rr / onnx-int8: dynamic int8 with 7-bit / 8-bit weights; openvino /
#: openvino-bf16: OpenVINO on the CPU in float32 / bf16; openvino-mixed: OpenVINO with the embeddings and first
#: layer in float32, the other layers in bf16. Precision is part of the engine's name, so a version records it
#: and is never served at another precision.
ENGINES = ("torch", "torch-half", "onnx", "onnx-int8", "onnx-int8-rr", "openvino", "openvino-bf16", "openvino-mixed")
#: The float32 reference: an Encoder's engine unless one is asked for, and what versions from before engines ran.
REFERENCE = "torch"
#: How each int8 engine quantises (see quantize_int8): onnx-int8 with 8-bit weights, onnx-int8-rr with 7-bit.
INT8 = {"onnx-int8": {"reduce_range": False}, "onnx-int8-rr": {"reduce_range": True}}
#: Engines whose vectors equal torch's (within float32 rounding): a version built with one may be
#: served with another.
EQUIVALENT = {"torch": "torch", "onnx": "torch", "openvino": "torch", "torch-half": "torch-half",
              "onnx-int8": "onnx-int8", "onnx-int8-rr": "onnx-int8-rr", "openvino-bf16": "openvino-bf16",
              "openvino-mixed": "openvino-mixed"}
#: Engines that run a packed BERT's embeddings and first layers in float32 and the rest in bf16: how many layers.
#: Part of the engine's vectors, so fixed for its name: another cut would be another engine.
#: On AVX-512 BF16 without AMX, bf16 everywhere moved paraphrase hit@1 (zh) 0.61 points under float32's (0.5
#: allowed); the first layer in float32 kept it 0.21 under, as torch's bf16 does, at 1.27× torch's bf16 at batch
#: 32 in-process (docs/performance.md).
F32_FRONT = {"openvino-mixed": 1}


#: CPU flags of int8 dot-product instructions (what makes ONNX Runtime's int8 kernels fast).
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: Engines `auto` may pick on a CPU, best first: (engine, the CPU flag it needs to be fast, why). Only engines
#: that hold the retrieval contract of benchmarks/int8_probe.py against fp32 on such a CPU are listed
#: (docs/performance.md). No int8 variant did anywhere (best 0.928 / 0.865 top-10 overlap, though 1.9-2.3× fp32
#: on VNNI), so int8 is an explicit choice. bf16 did, but which bf16 depends on the CPU: rounding differs
#: between AMX and AVX-512 BF16 kernels.
CPU_CANDIDATES = (
    ("openvino-bf16", "amx_bf16",
     "this CPU has amx_bf16: OpenVINO in bf16 runs 2.5-3× ONNX fp32 on such CPUs (1.2× torch's bf16) and shares "
     "at least 95% of float32's top 10 on average (measured on STS-B)"),
    ("openvino-mixed", "avx512_bf16",
     "this CPU has avx512_bf16 but no amx_bf16: OpenVINO with the first layer in float32 and the rest in bf16 "
     "keeps search results within the limits on such a CPU (measured on STS-B) and ran 1.27× torch's bf16 at "
     "batch 32 there, as fast or faster over HTTP; OpenVINO's bf16 everywhere moved paraphrase hit@1 (zh) 0.6 points under float32's, beyond "
     "the 0.5 allowed"),
)


#: The batcher's default budget per engine: rows and padded tokens per model batch. Over HTTP
#: (benchmarks/batch_sweep.py) the settings differed by less than run-to-run noise; in-process bf16 on AMX
#: gained from 64 rows (884 against 602 sentences/s) and fp32 did not (478 against 480).
BATCH_LIMITS = {"torch-half": (64, 16384)}
DEFAULT_BATCH_LIMITS = (32, 8192)


def batch_limits(engine: str) -> tuple[int, int]:
    """(rows, padded tokens) per model batch for `engine`, unless WHITEVEC_MAX_BATCH(_TOKENS) say otherwise."""
    return BATCH_LIMITS.get(engine, DEFAULT_BATCH_LIMITS)


@functools.lru_cache(maxsize=8)
def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags, read at run time (machines differ; read once per process, as every /readyz
    shows them); empty where the file is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@dataclass(frozen=True)
class EngineChoice:
    """What an engine setting resolves to on this machine, and why (in /readyz and each version's manifest)."""

    engine: str
    reason: str


def choose_auto(device_type: str, flags: frozenset[str] | None = None) -> EngineChoice:
    """auto: torch-half on a GPU; on a CPU the first of CPU_CANDIDATES whose flag the CPU has, else ONNX Runtime
    fp32 (torch's vectors, faster than torch on most CPUs)."""
    if device_type != "cpu":
        return EngineChoice("torch-half", f"a {device_type} device: torch in bf16 (fp16 where bf16 is missing)")
    flags = cpu_flags() if flags is None else flags
    for engine, flag, reason in CPU_CANDIDATES:
        if flag in flags:
            return EngineChoice(engine, reason)
    int8 = [f for f in INT8_FLAGS if f in flags]
    note = (f"it has {', '.join(int8)}, but int8 changes search results more than allowed: under 95% of "
            "float32's top 10, measured on STS-B" if int8 else "no int8 dot products either")
    return EngineChoice("onnx", f"this CPU has no bf16 instructions ({note}): ONNX Runtime fp32, torch's vectors")


def explain(engine: str, device_type: str) -> str:
    """Why `engine` encodes on this machine, as recorded in a version's manifest: what auto would pick here
    and why, and whether the engine is that choice."""
    auto = choose_auto(device_type)
    if engine == auto.engine:
        return f"auto's choice here: {auto.reason}"
    return f"set explicitly (auto would pick {auto.engine} here: {auto.reason})"


def serving_engine(built: str, wanted: str | None) -> str:
    """The engine a version built with `built` is served with when `wanted` (resolved) is configured:
    `wanted` if it gives the same vectors, else `built` (never other vectors against the version's index)."""
    if wanted is None or EQUIVALENT.get(wanted) != EQUIVALENT.get(built):
        return built
    return wanted
