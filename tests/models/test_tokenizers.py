import unicodedata

import pytest

from whitevec.models.tokenizers import TextTokenizer, has_content


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


def test_wobert_normalises_before_jieba(wobert):
    """As the reference tokenizer: lower-case and strip accents first, then jieba, then the vocab."""
    assert wobert.tokenize("今天HÉLLO世界") == ["今天", "hello", "世界"]
    assert wobert.tokenize("CÂT sat") == ["cat", "sat"]


@pytest.mark.parametrize("text", [
    "the cat sat on the mat " * 400,                     # long English, whitespace everywhere
    "今天天气不错我们的朋友" * 300,                         # long Chinese, no whitespace at all
    ("hello 世界 " * 200) + "x" * 3000,                   # mixed, ending in one huge word
    "short text",
])
@pytest.mark.parametrize("kind", ["bert", "wobert"])
def test_bounded_tokenization_equals_full_tokenization(tiny_model_dir, text, kind):
    tok = TextTokenizer(tiny_model_dir, kind)
    for max_length in (16, 64):
        ids, truncated = tok.encode_truncated([text], max_length)
        full = tok.encode([text])[0]
        want = full if len(full) <= max_length else full[: max_length - 1] + [tok.hf.sep_token_id]
        assert ids[0] == want and truncated[0] == (len(full) > max_length)


def test_bounded_tokenization_on_the_bundled_model(bundled_encoder):
    text = " ".join(f"word{i} and some more text, with punctuation!" for i in range(2000))
    ids, truncated = bundled_encoder.tokenize([text])
    full = bundled_encoder.tokenizer.encode([text])[0]
    assert truncated == [True] and ids[0] == full[: bundled_encoder.max_length - 1] + [full[-1]]


HOSTILE = ["", " ", "\x00", "a\x00b", "é" * 300, "日本語のテキストです。", "a\u200bb\u00ad", "😀" * 50,
           "Ünïcödé ÀCCENTS", "x " * 20_000, "tab\tand\nnewline"]


@pytest.mark.parametrize("model", ["tiny", "bundled"])
def test_ids_from_the_rust_tokenizer_equal_transformers_own(model, tiny_model_dir, bundled_encoder):
    """BERT's ids come straight from the Rust tokenizer (faster): the same ids as transformers' call, [CLS]/[SEP]
    included, untruncated, on hostile texts too; and its settings do not leak into transformers' tokenizer."""
    tok = TextTokenizer(tiny_model_dir, "bert") if model == "tiny" else bundled_encoder.tokenizer
    texts = [*HOSTILE, "The quick brown fox jumps over the lazy dog."]
    assert tok._rust is not None and tok._rust is not tok.hf.backend_tokenizer  # a copy: transformers' is untouched
    assert tok.encode(texts) == tok.hf(texts, add_special_tokens=True)["input_ids"]
    assert len(tok.encode(["x " * 20_000])[0]) == 20_002  # no truncation hidden in tokenizer.json


def test_pad_right_pads_and_masks_each_row_to_its_length(bert):
    ids = bert.encode(["a", "a longer sentence with more words", "", "x " * 40])
    batch = bert.pad(ids, 16)
    assert batch.input_ids.shape == (4, 16) and batch.truncated == [False, False, False, True]
    for i, row in enumerate(ids):
        n = min(len(row), 16)
        want = row if len(row) <= 16 else row[:15] + [bert.hf.sep_token_id]
        assert batch.input_ids[i, :n].tolist() == want
        assert batch.attention_mask[i].tolist() == [1] * n + [0] * (16 - n)
        assert set(batch.input_ids[i, n:].tolist()) <= {bert.hf.pad_token_id or 0}


@pytest.mark.parametrize("model", ["tiny", "bundled"])
@pytest.mark.parametrize("kind", ["bert", "wobert"])
def test_a_text_without_content_is_only_the_special_tokens(model, kind, tiny_model_dir, bundled_encoder):
    """has_content is what the tokenizer's cleaning keeps, over every control, format and space character and a
    sample of the rest: a text it calls empty
    encodes as [CLS][SEP] alone (or [UNK], for format characters newer than the tokenizer's Unicode tables), in both
    tokenizers; every other character gives a token (combining marks aside, which uncased models strip as
    accents)."""
    folder = tiny_model_dir if model == "tiny" else bundled_encoder.model_dir
    tok = TextTokenizer(folder, kind)
    specials = [tok.hf.cls_token_id, tok.hf.sep_token_id]
    unknown = [tok.hf.cls_token_id, tok.hf.unk_token_id, tok.hf.sep_token_id]
    step = 5 if kind == "bert" else 37  # jieba is slow: a sparser sample for WoBERT
    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    # every control, format and space character (where the rule and the tokenizer could part), a sample of the rest
    edge = [chr(c) for c in points if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zs", "Zl", "Zp")]
    sample = edge + [chr(c) for c in points[::step]]
    sample += ["\u200b", "\ufeff", "\ufffd", "\u3000", "\u2028", "\U000f0000", "\u00ad", "\x00\x01\u200b \t"]
    empty = [t for t in sample if not has_content(t)]
    ids = tok.encode(empty)
    assert len(empty) > 3_000 and all(row in (specials, unknown) for row in ids)
    assert sum(row == specials for row in ids) > 0.99 * len(ids)
    kept = [t for t in sample if has_content(t) and unicodedata.category(t[0]) not in ("Mn", "Mc", "Me")]
    assert len(kept) > 20_000 and all(len(row) > 2 for row in tok.encode(kept))
    assert has_content("\u200b a") and has_content("👨\u200d👩") and has_content("中")
