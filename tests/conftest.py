"""Shared fixtures: a tiny random BERT written to disk and loaded through the real loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ENGLISH = ("the a cat dog sat on mat hello world search vector index model text good bad day sun rain "
           "is are was be ##rt ##s ##ing ##ed ##er red blue green house car tree city river").split()
CHINESE_CHARS = list("今天气不错我们的朋友世界用模型好很雨下在是人大小中国家学生")
CHINESE_WORDS = ["今天", "不错", "我们", "世界", "中国", "学生"]
VOCAB = SPECIAL + ENGLISH + CHINESE_CHARS + CHINESE_WORDS

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_tiny_bert(folder: Path, seed: int = 0, pooler: bool = True, hidden: int = 32) -> Path:
    """A 2-layer random BERT in Hugging Face format, small enough to run in milliseconds."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    BertTokenizer.from_pretrained(str(folder), do_lower_case=True).save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=pooler).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from models.encoder import Encoder

    return Encoder(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def bundled_encoder():
    from models.encoder import Encoder

    return Encoder(device="cpu")


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    """A small STS-style file the test suite writes itself."""
    rows = [
        ("the cat sat on the mat", "a cat sat on a mat", 5.0),
        ("the dog sat on the mat", "a cat is on the mat", 3.0),
        ("hello world", "hello world", 5.0),
        ("red car", "blue house", 0.5),
        ("good day sun", "bad day rain", 1.5),
        ("search vector index", "vector index search", 4.5),
        ("the river city", "a green tree", 0.0),
        ("今天天气不错", "今天天气很好", 4.0),
        ("我们的朋友", "我们是朋友", 3.5),
        ("中国学生", "大学生", 2.0),
    ]
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows), encoding="utf-8")
    return path


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")
