import json
import shutil

import numpy as np
import pytest
import torch
from transformers import BertModel

from whitevec.models.encoder import Encoder
from whitevec.models.errors import ModelFolderError
from whitevec.models.pooling import Pooling, default_pooling

TEXTS = ["the cat sat on the mat", "hello", "今天天气不错"]


def hand_pooled(model_dir, text: str, mode: str) -> np.ndarray:
    """Each pooling computed by hand on one unpadded sentence, token by token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertModel.from_pretrained(str(model_dir)).eval()
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    tokens = ids.shape[1]
    first = sum(out.hidden_states[1][0, t] for t in range(tokens)) / tokens
    last = sum(out.hidden_states[-1][0, t] for t in range(tokens)) / tokens
    h_cls = out.last_hidden_state[0, 0]
    dense = model.pooler.dense
    value = {
        "cls": h_cls,
        "pooler": torch.tanh(dense.weight @ h_cls + dense.bias),
        "last-avg": last,
        "first-last-avg": (first + last) / 2,
    }[mode]
    return value.detach().numpy()


@pytest.mark.parametrize("mode", ["cls", "pooler", "last-avg", "first-last-avg"])
def test_pooling_matches_hand_computation_in_padded_batches(tiny_model_dir, mode):
    encoder = Encoder(tiny_model_dir, pooling=mode, device="cpu")
    got = encoder.encode(TEXTS).vectors  # one batch of three lengths: padding is exercised
    for row, text in zip(got, TEXTS):
        np.testing.assert_allclose(row, hand_pooled(tiny_model_dir, text, mode), rtol=1e-4, atol=1e-5)


def test_batching_keeps_order_and_values(tiny_encoder):
    texts = [f"the cat {'sat ' * i}on the mat" for i in range(9)]
    together = tiny_encoder.encode(texts, batch_size=4).vectors
    alone = np.stack([tiny_encoder.encode([t]).vectors[0] for t in texts])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_default_pooling_comes_from_the_folder(tiny_model_dir, tmp_path, bundled_encoder):
    assert bundled_encoder.pooling.mode == "last-avg"  # sentence-transformers mean pooling
    assert default_pooling(tiny_model_dir) == "first-last-avg"
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert default_pooling(folder) == "cls"
    Pooling("pooler").save(folder)
    assert default_pooling(folder) == "pooler"


def test_unknown_pooling_is_named():
    with pytest.raises(ValueError, match="choose one of cls, pooler"):
        Pooling("weighted-mean")


def test_pooler_without_trained_weights_is_refused(tmp_path):
    from tests.conftest import make_tiny_bert

    folder = make_tiny_bert(tmp_path / "nopooler", pooler=False)
    with pytest.raises(ModelFolderError, match="no trained pooler weights"):
        Encoder(folder, pooling="pooler", device="cpu")
    assert Encoder(folder, pooling="cls", device="cpu").encode(["hello"]).vectors.shape == (1, 32)
