"""The web console's static files at /console: HTML, CSS, JavaScript and an icon from the package, nothing else.

The console is a client of the HTTP API like the SDK: these routes only hand out its files, with no
token (the page sends the token the user types with each API call it makes) and a Content-Security-Policy
that lets the page load nothing but these files and talk to nothing but this server.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from .errors import NotFound

FOLDER = Path(str(files("whitevec.service.http") / "console"))
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
#: Everything the page may load comes from here; no inline script or style, no other origin, no framing.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> Response:
    """One of the console's files by its plain name: nothing outside the folder, no other kinds of file."""
    path = FOLDER / name
    kind = TYPES.get(path.suffix)
    if kind is None or "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"the console has no file {name[:100]!r}; open /console")
    return Response(path.read_bytes(), media_type=kind, headers=HEADERS)


@router.get("/console")
async def console() -> Response:
    """The console's page; it loads its script and style from /console/."""
    return _file("index.html")


@router.get("/console/{name}")
async def console_file(name: str) -> Response:
    return _file(name)
