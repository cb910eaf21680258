import pytest

from whitevec.models.tokenizers import TextTokenizer


@pytest.fixture(scope="module")
def wobert(tiny_model_dir):
    return TextTokenizer(tiny_model_dir, "wobert")


@pytest.fixture(scope="module")
def bert(tiny_model_dir):
    return TextTokenizer(tiny_model_dir, "bert")


def test_in_vocab_word_stays_one_token(wobert, bert):
    assert wobert.tokenize("我们的朋友")[:2] == ["我们", "的"]
    assert bert.tokenize("我们的朋友")[:3] == ["我", "们", "的"]


def test_out_of_vocab_word_falls_back_to_bert(wobert):
    # jieba yields 朋友 as one word, which the vocab lacks: it splits into characters.
    assert wobert.tokenize("我们的朋友") == ["我们", "的", "朋", "友"]
    # An ASCII word outside the vocab goes through WordPiece (lower-cased).
    assert wobert.tokenize("我用BERT模型") == ["我", "用", "be", "##rt", "模", "型"]


def test_mixed_chinese_and_ascii(wobert):
    assert wobert.tokenize("今天hello世界") == ["今天", "hello", "世界"]
    assert wobert.tokenize("今天 hello  world") == ["今天", "hello", "world"]


def test_truncation_is_reported_and_keeps_sep(bert):
    ids = bert.encode(["hello world " * 40, "hello"])
    batch = bert.pad(ids, max_length=16)
    assert batch.truncated == [True, False]
    assert batch.input_ids.shape == (2, 16)
    assert batch.input_ids[0, -1].item() == bert.hf.sep_token_id
    assert batch.attention_mask[1].sum().item() == 3  # [CLS] hello [SEP]


def test_unknown_tokenizer_is_named(tiny_model_dir):
    with pytest.raises(ValueError, match="bert, wobert"):
        TextTokenizer(tiny_model_dir, "sentencepiece")
