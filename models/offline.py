"""Keeps the libraries the encoders run on offline and silent: no hub, no telemetry, no identifier on disk.

whitevec runs where nothing may be downloaded and nothing sent. Two of its engines' libraries phone home
by default:
- ONNX Runtime (1.29 and later, on Linux too) starts a telemetry uploader thread with its first session and
  writes a device id and an event database under ~/.cache/Microsoft. Besides what it would send, that thread
  races the process's exit: a `whitevec index build` that had finished its work was seen to die with
  "terminate called without an active exception" (SIGABRT) about once in 25 runs. Its opt-out is an
  environment variable read once, when onnxruntime is imported, so it is set here, before any import of it.
- OpenVINO's converter and NNCF count usage through `openvino_telemetry`, which treats a missing consent
  file as consent and writes a client id under ~/intel. decline_openvino_telemetry answers "declined" in
  this process, as an opted-out user's consent file would, without writing to anyone's home.

A user's own setting of these variables wins (setdefault).
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger(__name__)

#: Set before transformers, tokenizers or onnxruntime is imported anywhere in the process (children inherit
#: them: training workers, Ray workers). ORT_DISABLE_TELEMETRY is onnxruntime 1.29-1.32's name for the full
#: opt-out, ORT_TELEMETRY_DISABLED the later releases'.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "ORT_DISABLE_TELEMETRY": "1",
    "ORT_TELEMETRY_DISABLED": "1",
}


def set_offline_env() -> None:
    """OFFLINE_ENV into os.environ, keeping what the user set. Runs at this module's import."""
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)


@functools.cache
def decline_openvino_telemetry() -> None:
    """Make openvino_telemetry (used by ov.convert_model and NNCF) see a declined consent in this process:
    nothing sent, no client id or usage counter written. Call before `import openvino` or `import nncf`: both
    start their counter at import."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # not installed (OpenVINO then uses its own no-op stub), or moved in a later release
        log.debug("openvino_telemetry's OptInChecker not found: its telemetry is left as it is")
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED


set_offline_env()
