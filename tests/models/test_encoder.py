import shutil

import numpy as np
import pytest

from whitevec.models.encoder import Encoder
from whitevec.models.errors import ModelFolderError
from whitevec.models.loader import fingerprint, resolve_model_dir
from tests.conftest import make_tiny_bert


@pytest.mark.parametrize("remove,named", [
    ("config.json", "no config.json"),
    ("model.safetensors", "no weights"),
    ("vocab.txt", "no vocabulary"),
])
def test_incomplete_folder_names_what_is_missing(tiny_model_dir, tmp_path, remove, named):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / remove).unlink()
    if remove == "vocab.txt":
        (folder / "tokenizer.json").unlink(missing_ok=True)
    with pytest.raises(ModelFolderError, match=f"{folder}.*{named}"):
        Encoder(folder, device="cpu")


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        resolve_model_dir(tmp_path / "nope")


def test_fingerprint_follows_the_weights(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    other = make_tiny_bert(tmp_path / "other", seed=1)
    assert fingerprint(copy) == fingerprint(tiny_model_dir)
    assert fingerprint(other) != fingerprint(tiny_model_dir)


def test_truncation_flags(tiny_model_dir):
    encoder = Encoder(tiny_model_dir, max_length=8, device="cpu")
    result = encoder.encode(["hello", "the cat sat on the mat with a dog"])
    assert result.truncated == [False, True]
    assert np.isfinite(result.vectors).all()


def test_wobert_tokenizer_is_selectable(tiny_model_dir):
    bert = Encoder(tiny_model_dir, device="cpu").encode(["我们的朋友"]).vectors
    wobert = Encoder(tiny_model_dir, tokenizer="wobert", device="cpu").encode(["我们的朋友"]).vectors
    assert not np.allclose(bert, wobert)


def test_bundled_model_matches_sentence_transformers(bundled_encoder):
    """The real all-MiniLM-L6-v2: same vectors as its reference implementation."""
    from sentence_transformers import SentenceTransformer

    from whitevec.models.loader import bundled_model_dir

    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell today."]
    ours = bundled_encoder.encode(texts).vectors
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    ref = SentenceTransformer(str(bundled_model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert bundled_encoder.identity.name == "all-MiniLM-L6-v2" and bundled_encoder.dim == 384
    sims = ours @ ours.T
    assert sims[0, 1] > sims[0, 2] + 0.2


def test_first_last_avg_by_hook_equals_all_hidden_states(tiny_model_dir):
    """hidden_states[1] is captured with a hook on the first layer; the vectors equal those from
    output_hidden_states=True (every layer kept)."""
    import torch

    from whitevec.models.encoder import Encoder

    enc = Encoder(tiny_model_dir, pooling="first-last-avg", device="cpu")
    assert enc._first_layer() is not None
    texts = ["the cat sat on the mat", "a", "a red car by the river, twice as long as the first one"]
    got = enc.encode(texts).vectors
    ids, _ = enc.tokenize(texts)
    batch = enc.tokenizer.pad(ids, enc.max_length)
    with torch.inference_mode():
        out = enc.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    want = enc.pooling(out, batch.attention_mask).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
