"""The commands that talk to a running server (`whitevec collections list|create|delete`)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from whitevec.models.errors import WhitevecError

from ..engine.admin_token import TOKEN_FILE


def _stored_token(data_dir: Path) -> str | None:
    """The token a server on this machine generated and kept in its data dir (read only: never created here)."""
    try:
        return (data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def cmd_collections(args: argparse.Namespace) -> int:
    """`whitevec collections list|create|delete` against a running server (admin token from the environment)."""
    import httpx

    token = os.environ.get("WHITEVEC_ADMIN_TOKEN") or _stored_token(Path(args.data_dir))
    if not token:
        raise WhitevecError(f"no admin token: set WHITEVEC_ADMIN_TOKEN, or give the server's --data-dir (no "
                            f"{Path(args.data_dir) / TOKEN_FILE} here)")
    headers = {"Authorization": f"Bearer {token}"}
    url = args.url.rstrip("/")
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
            if args.collections_command == "list":
                r = http.get("/admin/collections")
            elif args.collections_command == "create":
                body: dict = {}
                if args.model:
                    body["model"] = args.model
                whitening = {k: v for k, v in (("beta", args.beta), ("gamma", args.gamma), ("dim", args.dim))
                             if v is not None}
                if whitening:
                    body["whitening"] = whitening
                if args.index_type:
                    body["index"] = {"type": args.index_type}
                if args.passages is not None:  # "" → the model's max length; "128" or "128:16"
                    tokens, _, overlap = args.passages.partition(":")
                    body["passages"] = {"max_tokens": int(tokens) if tokens else None,
                                        "overlap": int(overlap) if overlap else None}
                r = http.put(f"/admin/collections/{args.name}", json=body)
            else:
                r = http.delete(f"/admin/collections/{args.name}", params={"confirm": "true"} if args.yes else {})
    except httpx.TransportError as exc:
        raise WhitevecError(f"no whitevec server answers at {url} ({exc}); start one (`whitevec serve`) or give "
                            "--url") from None
    if not r.is_success:
        try:
            message = r.json()["error"]["message"].replace("add ?confirm=true", "add --yes")
        except (ValueError, KeyError, TypeError):
            message = r.text[:500]
        raise WhitevecError(f"{r.status_code}: {message}")
    answer = r.json()
    if args.collections_command == "list" and not args.json:
        rows = answer["collections"]
        print(f"{'name':<24} {'documents':>10} {'dim':>5}  {'model':<28} active version")
        for c in rows:
            print(f"{c['name']:<24} {c['documents']:>10} {c['dim'] or '-':>5}  {str(c['model'])[:28]:<28} "
                  f"{c['active_version'] or '-'}")
    else:
        print(json.dumps(answer, indent=2))
    return 0


def add_collections_parser(sub: argparse._SubParsersAction) -> None:
    cols = sub.add_parser("collections", help="list, create or delete collections of a running server "
                          "(admin token from WHITEVEC_ADMIN_TOKEN, else the data dir's)").add_subparsers(dest="collections_command",
                                                                                   required=True)
    for name, text in (("list", "every collection: documents, dim, model, active version"),
                       ("create", "a new empty collection"), ("delete", "a collection and its documents")):
        c = cols.add_parser(name, help=text)
        c.add_argument("--url", default=os.environ.get("WHITEVEC_URL", "http://127.0.0.1:8000"),
                       help="the server (default WHITEVEC_URL, else http://127.0.0.1:8000)")
        c.add_argument("--data-dir", default=os.environ.get("WHITEVEC_DATA_DIR", "data"),
                       help="without WHITEVEC_ADMIN_TOKEN, the admin token is read from this data dir's "
                            "admin_token (default WHITEVEC_DATA_DIR, else ./data)")
        if name == "list":
            c.add_argument("--json", action="store_true", help="print the server's JSON answer")
        else:
            c.add_argument("name", help="[a-z0-9][a-z0-9_-]{0,62}")
        if name == "create":
            c.add_argument("--model", default=None, help="`bundled`, or a fine-tune's folder name in the data dir's "
                           "models/ (default: the server's model)")
            c.add_argument("--beta", type=float, default=None, help="whitening β for its rebuilds")
            c.add_argument("--gamma", type=float, default=None, help="whitening γ for its rebuilds")
            c.add_argument("--dim", type=int, default=None, help="kept dims for its rebuilds")
            c.add_argument("--index-type", choices=("flat", "ivf", "hnsw"), default=None)
            c.add_argument("--passages", nargs="?", const="", default=None, metavar="MAX_TOKENS[:OVERLAP]",
                           type=_passages, help="split long documents into passages at its rebuilds (no value: the "
                           "model's max length, an eighth of it carried over)")
        if name == "delete":
            c.add_argument("--yes", action="store_true", help="really delete it and its documents")
        c.set_defaults(func=cmd_collections)


def _passages(value: str) -> str:
    """MAX_TOKENS[:OVERLAP] as given, after checking both are whole numbers (the server checks the rest)."""
    tokens, _, overlap = value.partition(":")
    if not all(part.isdigit() for part in (tokens, overlap) if part) or (overlap and not tokens):
        raise argparse.ArgumentTypeError(f"{value!r}: give MAX_TOKENS or MAX_TOKENS:OVERLAP, e.g. 128 or 128:16")
    return value
