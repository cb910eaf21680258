"""Writes the asyncio SDK (`whitevec_client/_async.py`) from the blocking one (`_client.py`), so the two never drift.

The blocking client is the one written by hand; this turns it into its awaited twin by rules, keeping its
comments, docstrings and layout: every method that talks to the server becomes `async def`, every call of
one is awaited (in parentheses where the result is indexed or read from), `time.sleep` becomes
`asyncio.sleep`, httpx's `Client` its `AsyncClient`, `with` its `async with`, and the classes get their
Async names. The rules fail loudly when the source stops matching them, rather than writing a wrong twin.

    python clients/make_async.py           # rewrite _async.py
    python clients/make_async.py --check   # exit 1 when _async.py is not what _client.py makes
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "whitevec_client"
SOURCE, TARGET = PACKAGE / "_client.py", PACKAGE / "_async.py"

#: Methods that stay plain: they build objects and never touch the network.
STAY_SYNC = {"__init__", "__repr__", "collection"}
RENAMED_METHODS = {"__enter__": "__aenter__", "__exit__": "__aexit__"}
RENAMED_NAMES = {"_Corpus": "_AsyncCorpus", "Client": "AsyncClient", "Collection": "AsyncCollection"}
#: Calls that become awaited calls of another name (besides the client's own async methods).
AWAITED_CALLS = {"self._http.request": "self._http.request", "self._http.close": "self._http.aclose",
                 "time.sleep": "asyncio.sleep"}
MODULE_DOC = ('"""AsyncClient, the asyncio SDK, and AsyncCollection, its handle on one collection: the same methods\n'
              'as Client and Collection (see their docstrings), awaited.\n\n'
              'Generated from _client.py by clients/make_async.py: edit _client.py and run that script."""')
#: Prose that says something else for the awaited client: (in the blocking source, in the async one).
PROSE = [
    ("sent through `_run`.", "sent through `_run` (awaited)."),
    ('"""Blocking client. Retries 429, 502, 503, 504 and connection errors with backoff, on idempotent calls\n'
     '    only.\n'
     '    URL and tokens default to WHITEVEC_URL, WHITEVEC_API_KEY and WHITEVEC_ADMIN_TOKEN."""',
     '"""Asyncio client: `async with AsyncClient(...) as wv: await wv.search(...)`. Retries 429, 502, 503,\n'
     '    504 and connection errors with backoff, on idempotent calls only. URL and tokens default to\n'
     '    WHITEVEC_URL, WHITEVEC_API_KEY and WHITEVEC_ADMIN_TOKEN."""'),
    ("(`with Client(...)` does it)", "(`async with AsyncClient(...)` does it)"),
    ("import time\n", "import asyncio\nimport time\n"),
]


class Mismatch(Exception):
    """The blocking source no longer has what a rule expects: the rule must change with it."""


def _close_paren(text: str, open_at: int) -> int:
    """Index of the parenthesis closing the one at `open_at` (strings inside hold no parentheses here)."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise Mismatch(f"unbalanced parenthesis at offset {open_at}")


def _async_defs(text: str) -> tuple[str, set[str]]:
    """`def` → `async def` for every method but STAY_SYNC (continuation lines aligned to the parameters move
    along); returns the text and the names of the methods made async."""
    made: set[str] = set()
    out: list[str] = []
    shift: int | None = None  # the column continuation lines of the current signature are aligned to
    for line in text.splitlines(keepends=True):
        if shift is not None:
            indent = len(line) - len(line.lstrip(" "))
            line = " " * 6 + line if indent == shift else line
            if line.rstrip().endswith(":") or line.rstrip().endswith("..."):
                shift = None
            out.append(line)
            continue
        m = re.match(r"( *)def (\w+)\(", line)
        if m and m.group(2) not in STAY_SYNC:
            name = m.group(2)
            made.add(RENAMED_METHODS.get(name, name))
            line = f"{m.group(1)}async def {RENAMED_METHODS.get(name, name)}(" + line[m.end():]
            if not (line.rstrip().endswith(":") or line.rstrip().endswith("...")):
                shift = m.end()  # the column of the first parameter, before `async ` moved it
        out.append(line)
    return "".join(out), made


def _await_calls(text: str, methods: set[str]) -> str:
    """Await each call of an async method of the client (`self.x(…)`, `self._client.x(…)`) and of the
    AWAITED_CALLS; `(await …)` where the result is indexed or an attribute is read from it."""
    names = "|".join(sorted(methods))
    fixed = "|".join(re.escape(k) for k in sorted(AWAITED_CALLS, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.])(?:(?P<own>self\.(?:_client\.)?(?:{names}))|(?P<fixed>{fixed}))\(")
    out: list[str] = []
    pos = 0
    for m in pattern.finditer(text):
        close = _close_paren(text, m.end() - 1)
        callee = m.group("own") or AWAITED_CALLS[m.group("fixed")]
        inner = _await_calls(text[m.end():close], methods)  # calls inside the arguments
        call = f"await {callee}({inner})"
        out.append(text[pos:m.start()])
        out.append(f"({call})" if text[close + 1:close + 2] in ("[", ".") else call)
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


def generate(source: str) -> str:
    """The asyncio module for a blocking module's text."""
    if not source.startswith('"""') or source.find('"""', 3) < 0:
        raise Mismatch("_client.py does not start with its docstring")
    rest = source[source.find('"""', 3) + 3:]
    source = "@MODULE_DOC@" + rest
    for before, after in PROSE:
        if before not in source:
            raise Mismatch(f"_client.py no longer holds {before[:60]!r}: update PROSE in make_async.py")
        source = source.replace(before, after, 1)
    text, methods = _async_defs(source)
    text = _await_calls(text, methods)
    for old, new in RENAMED_NAMES.items():
        text = re.sub(rf"(?<![\w.]){old}\b", new, text)
    text = text.replace("httpx.Client(", "httpx.AsyncClient(")
    return text.replace("@MODULE_DOC@", MODULE_DOC, 1)


def main(argv: list[str]) -> int:
    made = generate(SOURCE.read_text(encoding="utf-8"))
    if "--check" in argv:
        if TARGET.read_text(encoding="utf-8") != made:
            print(f"{TARGET} is not what {SOURCE.name} makes: run python clients/make_async.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(made, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
