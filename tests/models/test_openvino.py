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


@pytest.mark.parametrize("engine", ["openvino", "openvino-bf16", "openvino-mixed"])
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
    assert serving_engine("openvino-bf16", "openvino-mixed") == "openvino-bf16"
    assert serving_engine("openvino-mixed", "openvino") == "openvino-mixed"


@pytest.mark.parametrize("pooling", ["cls", "pooler", "last-avg", "first-last-avg"])
def test_openvino_mixed_runs_its_front_at_f32_and_its_back_at_bf16(tiny_model_dir, tmp_path, pooling):
    """Two graphs: the embeddings and first layer compiled at f32 (its packed hidden state is torch's to float32
    rounding), the other layers at bf16 (the vectors close to torch's); converted once, then reused."""
    from whitevec.models.packed import PackedBert, PackedFront, places

    reference = Encoder(tiny_model_dir, pooling=pooling, device="cpu")
    want = reference.encode(TEXTS).vectors
    mixed = Encoder(tiny_model_dir, pooling=pooling, device="cpu", engine="openvino-mixed", engine_cache=tmp_path)
    runner = mixed._runner
    assert [s.precision for s in runner.stages] == ["f32", "bf16"] and runner.converted
    assert ["-packed1-front1-" in runner.paths[0].name, "-packed1-back1-" in runner.paths[1].name] == [True, True]
    got = mixed.encode(TEXTS).vectors
    assert got.dtype == np.float32 and _cosines(got, want).min() >= 0.99

    batch = mixed.tokenizer.pad(mixed.tokenize(TEXTS)[0], mixed.max_length)
    feeds = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()}
    hidden = np.asarray(runner.compiled[0].create_infer_request().infer(feeds)[0])
    with torch.inference_mode():
        front = PackedFront(PackedBert(reference.model, pooling == "first-last-avg", pooling == "pooler").eval(), 1)
        torch_hidden = front(batch.input_ids, batch.attention_mask)[0].numpy()
    assert hidden.shape == (1 + int(batch.attention_mask.sum()), reference.dim) == torch_hidden.shape
    assert places(batch.attention_mask)[2].shape[0] == hidden.shape[0]
    np.testing.assert_allclose(hidden, torch_hidden, atol=1e-5)

    again = Encoder(tiny_model_dir, pooling=pooling, device="cpu", engine="openvino-mixed", engine_cache=tmp_path)
    assert not again._runner.converted and again._runner.paths == runner.paths
    np.testing.assert_array_equal(again.encode(TEXTS).vectors, got)


@pytest.mark.parametrize("why", ["not a plain BERT", "the packed graph fails"])
def test_openvino_mixed_runs_a_model_it_cannot_cut_whole_at_f32(tiny_model_dir, tmp_path, monkeypatch, caplog, why):
    """A model PackedBert does not reproduce, or whose packed graphs cannot be made, has no first layer to cut
    off: it runs as one padded graph at f32, so the engine still keeps search results where auto picks it, and
    the log says so."""
    from whitevec.models import runners

    if why == "not a plain BERT":
        monkeypatch.setattr(runners.PackedBert, "fits", staticmethod(lambda model: False))
    else:
        def fails(*args, **kwargs):
            raise ValueError("cannot convert")

        monkeypatch.setattr(runners.PackedBert, "layer", fails)
    mixed = Encoder(tiny_model_dir, device="cpu", engine="openvino-mixed", engine_cache=tmp_path)
    assert [s.precision for s in mixed._runner.stages] == ["f32"] and "-packed" not in mixed._runner.path.name
    assert "openvino-mixed runs this model as one graph at f32" in caplog.text
    assert all(stage.module is None for stage in mixed._runner.stages)  # compiled: the torch module let go
    want = Encoder(tiny_model_dir, device="cpu").encode(TEXTS).vectors
    np.testing.assert_allclose(mixed.encode(TEXTS).vectors, want, atol=1e-5)
