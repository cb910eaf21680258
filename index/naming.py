"""The names of what a data dir holds (collections, versions, model folders): one table of rules, one check.

Every name here becomes a folder name, so each rule keeps paths out (no `/`, no leading dot, no NUL); the
rules differ only in what users and the server write: collection names go into URLs and Milvus names
(lowercase, short), version ids are made by the server (a UTC timestamp and a hex tag), model folders are
named by training runs after their base model or copied in by hand (almost anything a file name can be).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from whitevec.models.errors import WhitevecError

Kind = Literal["collection", "version", "model"]


@dataclass(frozen=True)
class NameRule:
    """What a name of one kind may be (`pattern`, matched in full), the rule in words for its error, and the
    request field that carries such names."""

    pattern: re.Pattern[str]
    rule: str
    param: str


RULES: dict[Kind, NameRule] = {
    "collection": NameRule(re.compile(r"[a-z0-9][a-z0-9_-]{0,62}"),
                           "use 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter or digit",
                           "name"),
    "version": NameRule(re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,99}"),
                        "a version is a folder of versions/, named by its id", "version"),
    "model": NameRule(re.compile(r"(?!\.)(?=.*\S)[^/\x00\ud800-\udfff]{1,200}", re.DOTALL),
                      "give `bundled`, or the name of a folder in the data dir's models/ (a fine-tune; at most "
                      "200 characters), without a path", "model"),
}


class BadName(WhitevecError):
    """A name outside its kind's rule."""

    def __init__(self, kind: Kind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.param = RULES[kind].param


def valid(kind: Kind, name: object) -> bool:
    """Whether `name` is a string its kind's rule allows (for listing folders: others are passed over)."""
    return isinstance(name, str) and RULES[kind].pattern.fullmatch(name) is not None


def shown(name: str) -> str:
    """A name as errors quote it: at most 80 characters, so a hostile 20,000-character name is not echoed."""
    return repr(name[:80] + "…") if len(name) > 80 else repr(name)


def check(kind: Kind, name: str) -> str:
    """`name`, when its kind allows it; else BadName saying the rule."""
    if not valid(kind, name):
        raise BadName(kind, f"{kind} name {shown(name)} is not allowed: {RULES[kind].rule}")
    return name
