"""sentence-transformers folders: Dense and Normalize applied, poolings mapped, the rest refused."""

import json
import shutil

import numpy as np
import pytest

from whitevec.models.encoder import Encoder
from whitevec.models.errors import ModelFolderError

TEXTS = ["the cat sat on the mat", "hello world", "今天天气不错", "a red car by the river"]


def st_folder(tiny_model_dir, tmp_path, pooling: str, dense: bool, normalize: bool):
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(tiny_model_dir), max_seq_length=64)
    modules = [word, models.Pooling(word.get_embedding_dimension(), pooling_mode=pooling)]
    if dense:
        modules.append(models.Dense(32, 16, activation_function=__import__("torch").nn.Tanh()))
    if normalize:
        modules.append(models.Normalize())
    st = SentenceTransformer(modules=modules, device="cpu")
    folder = tmp_path / f"st-{pooling}-{dense}-{normalize}"
    st.save(str(folder))
    return st, folder


@pytest.mark.parametrize("pooling,dense,normalize", [("max", True, True), ("mean", True, False),
                                                     ("cls", False, True)])
def test_vectors_match_sentence_transformers(tiny_model_dir, tmp_path, pooling, dense, normalize):
    st, folder = st_folder(tiny_model_dir, tmp_path, pooling, dense, normalize)
    want = st.encode(TEXTS, convert_to_numpy=True)
    encoder = Encoder(folder, device="cpu")
    assert encoder.identity.dim == want.shape[1] == (16 if dense else 32)
    np.testing.assert_allclose(encoder.encode(TEXTS).vectors, want, atol=1e-5)


def test_head_changes_the_fingerprint(tiny_model_dir, tmp_path):
    _, folder = st_folder(tiny_model_dir, tmp_path, "mean", True, False)
    before = Encoder(folder, device="cpu").identity.fingerprint
    weights = folder / "2_Dense" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    save_file({k: v * 2 for k, v in state.items()}, str(weights))
    assert Encoder(folder, device="cpu").identity.fingerprint != before


@pytest.mark.parametrize("config,fragment", [
    ({"pooling_mode_weightedmean_tokens": True}, "pooling weightedmean,"),
    ({"pooling_mode": "lasttoken"}, "pooling lasttoken,"),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, "pooling cls \\+ mean,"),
    ({"pooling_mode": ["mean", "max"]}, "pooling mean \\+ max,"),
])
def test_poolings_whitevec_cannot_reproduce_are_refused(tiny_model_dir, tmp_path, config, fragment):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **config}))
    with pytest.raises(ModelFolderError, match=fragment):
        Encoder(folder, device="cpu")
    assert Encoder(folder, pooling="cls", device="cpu").pooling.mode == "cls"  # an explicit choice is fine


def test_unknown_modules_after_pooling_are_refused(tiny_model_dir, tmp_path):
    _, folder = st_folder(tiny_model_dir, tmp_path, "mean", False, True)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_LayerNorm", "type": "sentence_transformers.models.LayerNorm"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelFolderError, match="LayerNorm after pooling is not supported"):
        Encoder(folder, device="cpu")


def test_saved_fine_tune_keeps_the_head(tiny_model_dir, tmp_path):
    from whitevec.models.training import save_model

    st, folder = st_folder(tiny_model_dir, tmp_path, "mean", True, True)
    encoder = Encoder(folder, device="cpu")
    out = tmp_path / "copy"
    save_model(encoder, out, {"loss": [1.0, 0.5], "settings": {"scale": 30, "margin": 0.35}, "n_classes": 2})
    np.testing.assert_allclose(Encoder(out, device="cpu").encode(TEXTS).vectors, st.encode(TEXTS), atol=1e-5)
