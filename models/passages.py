"""Long text → passages: sentence-bounded spans of at most `max_tokens` of the model's tokenizer, with
`overlap` tokens of the previous passage carried into the next.

A model sees at most its max length (256 tokens for the bundled model; a Chinese character is a token), so
one vector per long document sees only its beginning and blurs the rest; the maintainers of Chinese
embedding models advise splitting into overlapping passages instead. Sentences end at 。！？；… and at
.!?; (a full stop only before a space or the end, so 3.14 and e.g.x stay whole) and at line breaks. Whole
sentences are packed into a passage while they fit; the sentences that end a passage and together hold at
most `overlap` tokens begin the next one. A sentence longer than a passage is cut by tokens, in windows
of whole characters that overlap by at most `overlap` tokens. Passages are character offsets into the text (`text[start:end]`), with
no leading or trailing whitespace.

Token counts are the tokenizer's own (WordPiece; WoBERT's counted by the same WordPiece, which never
undercounts its jieba words), summed per sentence: BERT's pre-tokenizer splits at punctuation and spaces,
so a passage's count is the sum of its sentences'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

#: A sentence's end: its punctuation (a full stop only before whitespace or the end), closing quotes or
#: brackets after it, and the whitespace that follows; or a line break.
_END = re.compile(r"(?:[。！？；…!?;]+|\.+(?=\s|$))[\"'”’」』)）\]]*\s*|\n\s*")
SPECIAL_TOKENS = 2  # [CLS] and [SEP], part of every passage the model sees


class TokenOffsets(Protocol):
    """What splitting needs of a tokenizer: each token's character span in a text (no special tokens)."""

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...


@dataclass(frozen=True)
class PassageSetting:
    """A collection's passages: at most `max_tokens` tokens each ([CLS] and [SEP] included, as the model
    counts them), `overlap` tokens carried over from one passage into the next."""

    max_tokens: int
    overlap: int = 0

    def __post_init__(self) -> None:
        """ValueError naming the field when nothing would move on from one passage to the next."""
        if self.max_tokens <= SPECIAL_TOKENS:
            raise ValueError(f"passages.max_tokens {self.max_tokens}: give at least {SPECIAL_TOKENS + 1} "
                             "([CLS] and [SEP] count)")
        if not 0 <= self.overlap < self.max_tokens - SPECIAL_TOKENS:
            raise ValueError(f"passages.overlap {self.overlap}: give 0 to {self.max_tokens - SPECIAL_TOKENS - 1} "
                             "(fewer than a passage's own tokens, or no passage would move on)")

    @classmethod
    def resolve(cls, asked: dict | None, model_max_length: int) -> PassageSetting | None:
        """A collection's configured passages ({"max_tokens", "overlap"}, either null) for a model of this max
        length: max_tokens defaults to it, overlap to an eighth of a passage; ValueError naming the field."""
        if asked is None:
            return None
        tokens = asked.get("max_tokens") or model_max_length
        overlap = asked.get("overlap")
        setting = cls(tokens, (tokens - SPECIAL_TOKENS) // 8 if overlap is None else overlap)
        setting.check(model_max_length)
        return setting

    def check(self, model_max_length: int) -> None:
        """ValueError naming the field when the model could not see a whole passage."""
        if self.max_tokens > model_max_length:
            raise ValueError(f"passages.max_tokens {self.max_tokens}: give {SPECIAL_TOKENS + 1} to "
                             f"{model_max_length} (the model's max length; [CLS] and [SEP] count)")

    @property
    def budget(self) -> int:
        """Tokens of text a passage holds."""
        return self.max_tokens - SPECIAL_TOKENS

    def to_dict(self) -> dict:
        return {"max_tokens": self.max_tokens, "overlap": self.overlap}


@dataclass(frozen=True)
class Span:
    """A passage: `text[start:end]`."""

    start: int
    end: int


@dataclass(frozen=True)
class _Sentence:
    start: int
    end: int
    tokens: int


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, whitespace trimmed; none for a text of whitespace only."""
    out, begin = [], 0
    for match in _END.finditer(text):
        if match.end() > begin:
            out.append((begin, match.end()))
            begin = match.end()
    out.append((begin, len(text)))
    trimmed = []
    for start, end in out:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            trimmed.append((start, end))
    return trimmed


def _characters(offsets: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(start, end, tokens) per character group: the tokens that begin at the same character stay together,
    as a Hangul syllable's jamo or a rare character's byte pieces do, since a passage cannot cut a character."""
    groups: list[tuple[int, int, int]] = []
    for start, end in offsets:
        if groups and start < groups[-1][1]:
            first, last, count = groups[-1]
            groups[-1] = (first, max(last, end), count + 1)
        else:
            groups.append((start, end, 1))
    return groups


def _windows(offsets: list[tuple[int, int]], start: int, end: int, budget: int, overlap: int) -> list[Span]:
    """A sentence longer than a passage, cut into windows of whole characters holding at most `budget` tokens
    and sharing at most `overlap` with the window before; a character of more tokens than the budget is a
    window of its own (the model truncates it)."""
    groups = _characters(offsets)
    out: list[Span] = []
    first = 0
    while True:
        last, held = first, groups[first][2]
        while last + 1 < len(groups) and held + groups[last + 1][2] <= budget:
            last += 1
            held += groups[last][2]
        out.append(Span(max(groups[first][0], start), min(groups[last][1], end)))
        if last + 1 == len(groups):
            return out
        following, shared = last + 1, 0  # the next window begins at the ending characters holding <= overlap
        while following - 1 > first and shared + groups[following - 1][2] <= overlap:
            following -= 1
            shared += groups[following][2]
        first = following


def split(text: str, tokenizer: TokenOffsets, setting: PassageSetting) -> list[Span]:
    """The passages of `text`, in order; one (the trimmed text) when it fits; none for whitespace only."""
    offsets = tokenizer.token_offsets(text)
    bounds = sentences(text)
    if not bounds:
        return []
    if len(offsets) <= setting.budget:
        return [Span(bounds[0][0], bounds[-1][1])]
    budget, overlap = setting.budget, setting.overlap
    starts = [s for s, _ in offsets]
    out: list[Span] = []
    current: list[_Sentence] = []
    held = 0  # tokens in `current`

    def emit() -> None:
        if current:
            span = Span(current[0].start, current[-1].end)
            if not out or span != out[-1]:
                out.append(span)

    token = 0
    for start, end in bounds:
        first = token
        while token < len(starts) and starts[token] < end:
            token += 1
        sentence = _Sentence(start, end, token - first)
        if sentence.tokens > budget:  # cut by tokens, windows overlapping by `overlap`
            emit()
            current, held = [], 0
            out.extend(_windows(offsets[first:token], start, end, budget, overlap))
            continue
        if held + sentence.tokens > budget:
            emit()
            carried: list[_Sentence] = []
            for previous in reversed(current):  # the ending sentences holding at most `overlap` tokens
                kept = sum(s.tokens for s in carried) + previous.tokens
                if kept > overlap or kept + sentence.tokens > budget:
                    break
                carried.insert(0, previous)
            current, held = carried, sum(s.tokens for s in carried)
        current.append(sentence)
        held += sentence.tokens
    emit()
    return out
