"""The lexical analyzer: folding, Chinese words in search mode, hostile text."""

from whitevec.index.analyzer import analyze, describe, fold


def test_full_width_case_and_accents_fold_to_one_token():
    assert analyze("ＡＢＣ１２３ Café NAÏVE") == analyze("abc123 cafe naive") == ["abc123", "cafe", "naive"]
    assert fold("Straße") == "strasse"


def test_chinese_runs_give_words_and_the_words_inside_them():
    tokens = analyze("天气预报说明天下雨。")
    assert "天气预报" in tokens and "天气" in tokens and "预报" in tokens
    assert "。" not in tokens
    assert analyze("中文abc混合") [:1] == ["中文"] and "abc" in analyze("中文abc混合")


def test_punctuation_and_hostile_text_give_no_words_and_never_raise():
    assert analyze("  ...!!! ？？ ——") == []
    assert analyze("a\x00b\ud800c") == ["a", "b", "c"]
    long = "word " * 4000 + "天气" * 1000
    assert len(analyze(long)) >= 4000
    assert describe() == {"name": "whitevec-words", "version": 1}
