"""OpenVINO engines against torch: f32 gives torch's vectors, bf16 close ones; the IR is converted once."""

import numpy as np
import pytest
import torch

from whitevec.models.encoder import Encoder
from whitevec.models.errors import ModelFolderError

TEXTS = ["the cat sat on the mat", "hello world", "今天天气不错", "a red car by the river", "good day",
         "the cat sat on the mat " * 5]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("pooling", ["cls", "pooler", "last-avg", "first-last-avg"])
def test_openvino_gives_torchs_vectors_and_bf16_close_ones(tiny_model_dir, tmp_path, pooling):
    want = Encoder(tiny_model_dir, pooling=pooling, device="cpu").encode(TEXTS).vectors
    f32 = Encoder(tiny_model_dir, pooling=pooling, device="cpu", engine="openvino", engine_cache=tmp_path)
    got = f32.encode(TEXTS).vectors
    assert _cosines(got, want).min() >= 0.99999
    np.testing.assert_allclose(got, want, atol=1e-5)
    bf16 = Encoder(tiny_model_dir, pooling=pooling, device="cpu", engine="openvino-bf16", engine_cache=tmp_path)
    assert bf16._runner.path == f32._runner.path and not bf16._runner.converted  # one IR, two precisions
    half = bf16.encode(TEXTS).vectors
    assert half.dtype == np.float32 and _cosines(half, want).min() >= 0.99


def test_the_ir_is_converted_once_and_reused(tiny_model_dir, tmp_path, monkeypatch):
    import openvino as ov

    first = Encoder(tiny_model_dir, device="cpu", engine="openvino", engine_cache=tmp_path)
    path = first._runner.path
    assert first._runner.converted and first.identity.fingerprint in path.name
    assert "-packed1-" in path.name  # a plain BERT is converted packed (models/packed.py)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.with_suffix(".bin").name, path.name]  # no temp left
    mtime = path.stat().st_mtime_ns

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted a second time")

    monkeypatch.setattr(ov, "convert_model", no_conversion)
    again = Encoder(tiny_model_dir, device="cpu", engine="openvino", engine_cache=tmp_path)
    assert not again._runner.converted and again._runner.path == path and path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.encode(TEXTS).vectors, first.encode(TEXTS).vectors)


@pytest.mark.parametrize("engine", ["openvino", "openvino-bf16"])
def test_an_openvino_engine_refuses_another_device(tiny_model_dir, tmp_path, engine):
    from whitevec.models.runners import ENGINE_TYPES

    with pytest.raises(ModelFolderError, match=f"engine {engine} runs on the CPU"):
        ENGINE_TYPES[engine].prepare(torch.nn.Linear(1, 1), torch.device("cuda"))


def test_openvino_is_torchs_equivalent_and_bf16_its_own():
    from whitevec.models.engines import serving_engine

    assert serving_engine("torch", "openvino") == "openvino" and serving_engine("openvino", "onnx") == "onnx"
    assert serving_engine("openvino-bf16", "openvino") == "openvino-bf16"
    assert serving_engine("torch-half", "openvino-bf16") == "torch-half"
    assert serving_engine("torch", "openvino-bf16") == "torch"
