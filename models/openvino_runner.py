"""The OpenVINO runner: the transformer converted once to OpenVINO IR (cached by fingerprint), compiled for the CPU.

`openvino` compiles the IR at float32 (torch's vectors, to float32 rounding); `openvino-bf16` compiles the same
IR with INFERENCE_PRECISION_HINT bf16 (AMX-BF16 / AVX-512 BF16 kernels where the CPU has them: other vectors);
`openvino-mixed` runs a model cut in two graphs, the embeddings and first layer at f32 and the rest at bf16
(the plugin cannot keep chosen matrix products of one graph at f32: docs/performance.md).
The runner is handed the stages to convert (each a module, the key its IR is cached under, its outputs and its
precision; runners.py builds them), so this module knows nothing of the registry.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from .errors import ModelFolderError
from .offline import decline_openvino_telemetry

log = logging.getLogger(__name__)

#: The CPU precision each OpenVINO engine compiles a whole graph with (its INFERENCE_PRECISION_HINT);
#: `openvino-mixed` compiles its two stages at f32 and bf16, and a model it cannot cut whole at f32.
PRECISION = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-mixed": "f32"}


def compile_config(precision: str, threads: int) -> dict[str, str]:
    """The CPU plugin's settings at `precision` (f32 or bf16). One batch runs at a time (the encoder's model
    thread), so the LATENCY hint: one stream over every thread (THROUGHPUT's two one-thread streams were no
    faster at batch 32 on 2 cores, and slower in bf16). Threads are not pinned to cores: FAISS searches and the
    server share them (unpinned was as fast or faster; docs/performance.md)."""
    return {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads), "ENABLE_CPU_PINNING": "NO"}


@dataclass(frozen=True)
class Stage:
    """One graph of a runner: the module to convert, the key its IR is cached under (the model's fingerprint and
    layout), its outputs' names and the precision it is compiled at. The first stage takes (input_ids,
    attention_mask); a later one takes the previous one's `hidden` output, a packed [tokens, width] matrix of
    `width` columns, with the attention mask. The runner drops `module` once its IR is compiled (a packed
    module holds copies of the attention weights)."""

    module: torch.nn.Module | None
    key: str
    outputs: list[str]
    precision: str
    width: int | None = None


class OpenVinoRunner:
    """Runs the transformer with OpenVINO on the CPU, one compiled graph per stage, each stage's `hidden` fed to
    the next; returns an outputs object the Pooling step reads."""

    def __init__(self, stages: list[Stage], engine: str, cache: Path, threads: int | None = None) -> None:
        decline_openvino_telemetry()  # before openvino's import, which starts its usage counter
        try:
            import openvino as ov
        except ImportError as exc:  # pragma: no cover - a hard dependency
            raise ModelFolderError(f"engine {engine} needs the openvino package: pip install openvino") from exc
        # one IR for every precision: the precision is chosen when it is compiled
        self.paths = [cache / f"{s.key}-{'-'.join(s.outputs)}-openvino.xml" for s in stages]
        self.converted = False
        core = ov.Core()
        self.compiled = []
        for stage, path in zip(stages, self.paths):
            if not (path.is_file() and path.with_suffix(".bin").is_file()):
                self._build(ov, stage, path)
                self.converted = True
            self.compiled.append(core.compile_model(core.read_model(path), "CPU",
                                                    compile_config(stage.precision, threads or torch.get_num_threads())))
        self.stages = [replace(stage, module=None) for stage in stages]  # compiled: the torch module is not needed
        self._local = threading.local()

    @property
    def path(self) -> Path:
        """The first stage's IR: a one-stage runner's whole model; `paths` lists every stage's."""
        return self.paths[0]

    @staticmethod
    def _build(ov, stage: Stage, path: Path) -> None:  # noqa: ANN001 - the openvino module
        """Convert into temp files, then rename (weights first, the .xml last): a crash never leaves a half IR."""
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("converting the model to OpenVINO IR (once, cached in %s)", path.parent)
        tmp = path.with_name(path.stem + f".tmp-{os.getpid()}.xml")
        ids = torch.ones(2, 8, dtype=torch.long)
        mask = ids.clone()
        mask[1, 5:] = 0  # a padded row: the packed module's example must have padding to pack
        if stage.width is None:
            example = (ids, mask)
            spec = [(name, ov.PartialShape([-1, -1]), ov.Type.i64) for name in ("input_ids", "attention_mask")]
        else:  # the packed hidden state: the spare row and the 13 text tokens of the example
            example = (torch.zeros(1 + int(mask.sum()), stage.width), mask)
            spec = [("hidden", ov.PartialShape([-1, stage.width]), ov.Type.f32),
                    ("attention_mask", ov.PartialShape([-1, -1]), ov.Type.i64)]
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # tracing reads `loss_function`, which warns of a training loss
        # the converter sets the root logger to ERROR with a handler and filter of its own, and puts it back
        # only when it succeeds: after a failed conversion every later warning of the process went unseen
        root = logging.getLogger()
        root_state = root.level, list(root.filters), list(root.handlers)
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # tracer notes about shapes: the axes are declared dynamic
                model = ov.convert_model(stage.module.eval(), example_input=example, input=spec)
            for output, name in zip(model.outputs, stage.outputs):
                output.get_tensor().set_names({name})
            ov.save_model(model, str(tmp), compress_to_fp16=False)  # float32 weights: torch's vectors
            os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(tmp, path)
        finally:
            hf_logging.set_verbosity(verbosity)
            root.setLevel(root_state[0])
            root.filters[:], root.handlers[:] = root_state[1], root_state[2]
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".bin").unlink(missing_ok=True)

    def _requests(self) -> list:
        """One infer request per stage and thread (a request runs one batch at a time)."""
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = [compiled.create_infer_request() for compiled in self.compiled]
        return requests

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        mask = attention_mask.numpy().astype(np.int64)
        feeds = {"input_ids": input_ids.numpy().astype(np.int64), "attention_mask": mask}
        outs: dict[str, np.ndarray] = {}
        for stage, request in zip(self.stages, self._requests()):
            result = request.infer(feeds)  # copies out of the request's tensors
            outs.update((name, np.asarray(result[i])) for i, name in enumerate(stage.outputs))
            feeds = {"hidden": outs.pop("hidden", None), "attention_mask": mask}
        got = {name: torch.from_numpy(value) for name, value in outs.items()}
        last = got["last"]
        return SimpleNamespace(last_hidden_state=last, hidden_states=[None, got.get("first"), last],
                               pooler_output=got.get("pooler"))
