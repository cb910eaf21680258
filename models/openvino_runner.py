"""The OpenVINO runner: the transformer converted once to OpenVINO IR (cached by fingerprint), compiled for the CPU.

`openvino` compiles the IR at float32 (torch's vectors, to float32 rounding); `openvino-bf16` compiles the same
IR with INFERENCE_PRECISION_HINT bf16 (AMX-BF16 / AVX-512 BF16 kernels where the CPU has them: other vectors).
The runner is handed the module to convert (runners.transformer_module: the last hidden state, plus the first layer's
hidden state or the pooler output when the pooling needs them) and the key it is cached under, so this module
knows nothing of the registry.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from .errors import ModelFolderError
from .offline import decline_openvino_telemetry

log = logging.getLogger(__name__)

#: The CPU precision each OpenVINO engine compiles with (its INFERENCE_PRECISION_HINT).
PRECISION = {"openvino": "f32", "openvino-bf16": "bf16"}


def compile_config(engine: str, threads: int) -> dict[str, str]:
    """The CPU plugin's settings for `engine`. One batch runs at a time (the encoder's model thread), so the
    LATENCY hint: one stream over every thread (THROUGHPUT's two one-thread streams were no faster at batch 32
    on 2 cores, and slower in bf16). Threads are not pinned to cores: FAISS searches and the server share them
    (unpinned was as fast or faster; docs/performance.md)."""
    return {"INFERENCE_PRECISION_HINT": PRECISION[engine], "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads), "ENABLE_CPU_PINNING": "NO"}


class OpenVinoRunner:
    """Runs the transformer with OpenVINO on the CPU; returns an outputs object the Pooling step reads."""

    def __init__(self, module: torch.nn.Module, key: str, outputs: list[str], engine: str, cache: Path,
                 threads: int | None = None) -> None:
        if engine not in PRECISION:
            raise ValueError(f"unknown OpenVINO engine {engine!r}")
        decline_openvino_telemetry()  # before openvino's import, which starts its usage counter
        try:
            import openvino as ov
        except ImportError as exc:  # pragma: no cover - a hard dependency
            raise ModelFolderError(f"engine {engine} needs the openvino package: pip install openvino") from exc
        self.names = outputs
        # one IR for both precisions: the precision is chosen when it is compiled
        self.path = cache / f"{key}-{'-'.join(outputs)}-openvino.xml"  # key: the model's fingerprint and layout
        self.converted = False
        if not (self.path.is_file() and self.path.with_suffix(".bin").is_file()):
            self._build(ov, module, cache)
            self.converted = True
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(self.path), "CPU",
                                           compile_config(engine, threads or torch.get_num_threads()))
        self._local = threading.local()

    def _build(self, ov, module: torch.nn.Module, cache: Path) -> None:  # noqa: ANN001 - the openvino module
        """Convert into temp files, then rename (weights first, the .xml last): a crash never leaves a half IR."""
        cache.mkdir(parents=True, exist_ok=True)
        log.info("converting the model to OpenVINO IR (once, cached in %s)", cache)
        tmp = self.path.with_name(self.path.stem + f".tmp-{os.getpid()}.xml")
        ids = torch.ones(2, 8, dtype=torch.long)
        mask = ids.clone()
        mask[1, 5:] = 0  # a padded row: the packed module's example must have padding to pack
        spec = [(name, ov.PartialShape([-1, -1]), ov.Type.i64) for name in ("input_ids", "attention_mask")]
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # tracing reads `loss_function`, which warns of a training loss
        # the converter sets the root logger to ERROR with a handler and filter of its own, and puts it back
        # only when it succeeds: after a failed conversion every later warning of the process went unseen
        root = logging.getLogger()
        root_state = root.level, list(root.filters), list(root.handlers)
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # tracer notes about shapes: the axes are declared dynamic
                model = ov.convert_model(module.eval(), example_input=(ids, mask), input=spec)
            for output, name in zip(model.outputs, self.names):
                output.get_tensor().set_names({name})
            ov.save_model(model, str(tmp), compress_to_fp16=False)  # float32 weights: torch's vectors
            os.replace(tmp.with_suffix(".bin"), self.path.with_suffix(".bin"))
            os.replace(tmp, self.path)
        finally:
            hf_logging.set_verbosity(verbosity)
            root.setLevel(root_state[0])
            root.filters[:], root.handlers[:] = root_state[1], root_state[2]
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".bin").unlink(missing_ok=True)

    def _request(self):  # noqa: ANN202 - an openvino InferRequest
        """One infer request per thread (a request runs one batch at a time)."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        feeds = {"input_ids": input_ids.numpy().astype(np.int64), "attention_mask": attention_mask.numpy().astype(np.int64)}
        result = self._request().infer(feeds)  # copies out of the request's tensors
        outs = dict(zip(self.names, (torch.from_numpy(np.asarray(result[i])) for i in range(len(self.names)))))
        last = outs["last"]
        return SimpleNamespace(last_hidden_state=last, hidden_states=[None, outs.get("first"), last],
                               pooler_output=outs.get("pooler"))
