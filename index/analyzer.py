"""Text → the words a lexical index counts: jieba (search mode) for Chinese, Unicode words for the rest.

Every text is first folded so that what a reader takes for the same word is one token: NFKC (full-width
letters, digits and punctuation become their half-width forms; ligatures split), lower case (casefold),
accents dropped (é → e). Then each run of Han characters goes to jieba's search mode, which gives the
words and the shorter words inside them (中华人民共和国 → 中华, 华人, 人民, 共和, 共和国, 中华人民共和国), so a
query for part of a compound still meets it; everything else is split into Unicode words (letters and
digits; punctuation and spaces separate). A version records the analyzer's name and version in its manifest:
queries are analyzed as its documents were, and a later analyzer never reads an older index.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import Counter

NAME = "whitevec-words"
VERSION = 1

#: Han ideographs (the unified blocks, extension A, compatibility ideographs, extensions B onwards).
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_SPLIT = re.compile(rf"([{_HAN}]+)")
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; `_` separates like punctuation

_jieba_lock = threading.Lock()
_jieba = None


def _segmenter():
    """jieba's default tokenizer, its dictionary loaded once (about a second, the first time)."""
    global _jieba
    with _jieba_lock:
        if _jieba is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _jieba = jieba
        return _jieba


def fold(text: str) -> str:
    """NFKC, casefold, accents dropped: the form every token is cut from."""
    text = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def analyze(text: str) -> list[str]:
    """The tokens of `text`, in order (a repeated word repeats). Never raises on any str: lone surrogates
    and control characters are not words and are dropped."""
    tokens: list[str] = []
    for i, part in enumerate(_SPLIT.split(fold(text))):
        if not part:
            continue
        if i % 2:  # a Han run
            tokens.extend(w for w in _segmenter().cut_for_search(part, HMM=False) if w.strip())
        else:
            tokens.extend(_WORD.findall(part))
    return tokens


def term_counts(text: str) -> tuple[Counter[str], int]:
    """Each token's count in `text`, and the number of tokens (the document length BM25 normalises by)."""
    tokens = analyze(text)
    return Counter(tokens), len(tokens)


def describe() -> dict:
    """What a manifest records: queries against the version are analyzed by this same analyzer."""
    return {"name": NAME, "version": VERSION}
