"""The `whitevec` command line."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from whitevec.index.datadir import BUILD, SERVER, DataDirLock
from whitevec.models.errors import WhitevecError

from .common import add_model_args, build_encoder, settings_from
from .remote import add_collections_parser
from .train import add_train_parser


def _print_report(args: argparse.Namespace, report: dict, format_table: Callable[[dict], str]) -> int:
    """An eval's answer: exactly one JSON object with --json, else its table (and where --plot wrote)."""
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def cmd_eval_sts(args: argparse.Namespace) -> int:
    from whitevec.models.evaluation import evaluate_sts, format_table, plot_results

    encoder = build_encoder(args)
    dims = args.dim or [None]
    report = evaluate_sts(encoder, args.file, args.beta, args.gamma, dims, fit_path=args.fit_file,
                          progress=not args.json)
    if args.plot:
        plot_results(report, args.plot)
    return _print_report(args, report, format_table)


def cmd_eval_search(args: argparse.Namespace) -> int:
    from whitevec.index.lexical import BM25
    from whitevec.index.search_eval import format_table, make_task, plot_fusion, tune
    from whitevec.models.evaluation import read_pairs
    from whitevec.models.files import iter_lines
    from whitevec.models.pipeline import l2_normalize
    from whitevec.models.whitening import Whitening, WhiteningParams

    pairs = read_pairs(args.file)
    extra = [line.strip() for _, line in iter_lines(Path(args.corpus)) if line.strip()] if args.corpus else []
    task = make_task(pairs.a, pairs.b, pairs.scores, extra)
    encoder = build_encoder(args)
    corpus = encoder.encode(task.corpus, progress=not args.json).vectors
    queries = encoder.encode(task.queries, progress=not args.json).vectors
    fit = Whitening.fit(corpus, identity=encoder.identity, params=WhiteningParams(args.beta, args.gamma, args.dim))
    report = tune(task, l2_normalize(fit.transform(queries)), l2_normalize(fit.transform(corpus)),
                  BM25(args.k1, args.b), args.seed)
    if args.plot:
        plot_fusion(report, Path(args.plot), f"{Path(args.file).name}: held-out hit@1 by fusion")
    return _print_report(args, report, format_table)


def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beta", type=float, default=None, help="whitening β (default WHITEVEC_WHITEN_BETA, 0)")
    p.add_argument("--gamma", type=float, default=None, help="whitening γ (default WHITEVEC_WHITEN_GAMMA, 0)")
    p.add_argument("--dim", type=int, default=None, help="kept dims (default WHITEVEC_WHITEN_DIM, all)")
    p.add_argument("--index-type", choices=("flat", "ivf", "hnsw"), default=None)
    p.add_argument("--auto-whitening", default=None, metavar="PAIRS",
                   help="choose β, γ and dim on these labelled pairs (sentence1<TAB>sentence2<TAB>score), chosen "
                        "on one half and reported on the other; not with --beta/--gamma/--dim")
    p.add_argument("--tolerance", type=float, default=0.3,
                   help="with --auto-whitening: the smallest dim within this Spearman (×100) of the best wins")
    for name in ("nlist", "nprobe", "m", "ef-construction", "ef-search"):
        p.add_argument(f"--{name}", type=int, default=None, help="index parameter (default: from corpus size)")


def _build(col, args: argparse.Namespace, documents, encoder=None, path: Path | None = None) -> dict:
    from whitevec.index.documents import check_documents

    check_documents(documents, col.settings.max_documents)
    spec = col.corpus_builds.index_spec({"type": args.index_type, "nlist": args.nlist, "nprobe": args.nprobe, "m": args.m,
                          "ef_construction": args.ef_construction, "ef_search": args.ef_search})
    params = col.corpus_builds.whitening_params(args.beta, args.gamma, args.dim)
    auto = None
    if getattr(args, "auto_whitening", None):
        from whitevec.models.evaluation import read_pairs
        from whitevec.models.tuning import AutoWhitening, check_pairs

        if any(v is not None for v in (args.beta, args.gamma, args.dim)):
            raise WhitevecError("--auto-whitening chooses β, γ and dim: leave out --beta, --gamma and --dim")
        pairs = Path(args.auto_whitening)
        read = read_pairs(pairs)  # a bad file stops here, naming the line, before any encoding
        check_pairs(read.scores, read.a, read.b, pairs.name)
        auto = AutoWhitening(str(pairs.resolve()), pairs.name, tolerance=args.tolerance)
    raw = None
    if getattr(args, "ray", None) is not None:
        from tqdm import tqdm
        from whitevec.index.distributed import ray_encode

        encoder = encoder or col.require_bundle().encoder
        col.corpus_builds.check_whitening_dim(params, encoder)
        with tqdm(total=len(documents), desc=f"encoding on Ray ({args.ray})", unit="doc") as bar:
            raw = ray_encode(path, documents, encoder, args.ray, args.ray_workers,
                             on_progress=lambda done, total: bar.update(done - bar.n))
    return col.corpus_builds.rebuild(None, documents, params, spec, encoder=encoder, progress_bar=True, raw_vectors=raw,
                                  auto=auto)


def cmd_index_build(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise WhitevecError(f"{path} is not a file; give a JSONL file of {{\"id\", \"text\", \"metadata\"?}} lines")
    DataDirLock.check_free(settings_from(args).data_dir, *BUILD)  # at once, before torch loads
    if args.ray is not None:  # Ray first: it forks its servers, which must happen before an index backend opens gRPC
        from whitevec.index.distributed import ray_session

        with ray_session(args.ray):
            return _index_build(path, args)
    return _index_build(path, args)


def _index_build(path: Path, args: argparse.Namespace) -> int:
    from whitevec.index.documents import read_jsonl
    from whitevec.service.engine.access import OPERATOR
    from whitevec.service.engine.runtime import Runtime

    rt = Runtime(settings_from(args))
    rt.lock(*BUILD)  # refuses while a server uses this data dir
    try:
        rt.open()
        documents = read_jsonl(path)
        col = rt.collection(args.collection) or rt.create_collection(OPERATOR, args.collection, None, None, None)
        if args.model is not None:  # an explicit model replaces the served one
            encoder = col.new_encoder(Path(args.model))
        else:
            col.load()
            encoder = None
        result = _build(col, args, documents, encoder, path)
    finally:
        rt.unlock()
    print(json.dumps(result, indent=2))
    print(f"version {result['version']} is now active in collection {args.collection} of {rt.settings.data_dir}",
          file=sys.stderr)
    return 0


def bind_problem(host: str, port: int) -> str | None:
    """Why uvicorn could not listen on host:port now (None: it can), in one line naming the fix."""
    import errno
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind((host, port))
    except socket.gaierror as exc:
        return f"cannot listen on {host}: {exc.strerror}; give --host an address of this machine (127.0.0.1, 0.0.0.0)"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (f"port {port} on {host} is already in use; stop what is using it or choose another: "
                    f"whitevec serve --port {port + 1} (make run PORT={port + 1})")
        if exc.errno == errno.EACCES:
            return f"port {port} needs privileges on this machine; choose a port above 1023 (--port 8000)"
        return f"cannot listen on {host}:{port}: {exc.strerror}; check --host and --port"
    return None


def port_number(text: str) -> int:
    """argparse type: a TCP port."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: give a number from 1 to 65535")
    return int(text)


def _self_command() -> str:
    """How to run `whitevec` again from here: the venv's script (relative when under this folder)."""
    script = Path(sys.executable).with_name("whitevec")
    if not script.is_file():
        return "whitevec"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def cmd_serve(args: argparse.Namespace) -> int:
    problem = bind_problem(args.host, args.port)  # before the model, the banner or the token
    if problem is not None:
        print(f"whitevec: {problem}", file=sys.stderr)
        return 1
    settings = settings_from(args)
    DataDirLock.check_free(settings.data_dir, *SERVER)  # at once, before torch loads (seconds)
    import uvicorn
    from whitevec.index.documents import read_jsonl
    from whitevec.service.http.app import create_app
    from whitevec.service.engine.runtime import DEMO_CORPUS

    app = create_app(settings)
    rt = app.state.runtime
    rt.lock(*SERVER)  # before anything touches the data dir; the app's lifespan keeps it
    rt.open()  # upgrades a data dir from before collections
    if args.demo and not rt.default.versions.versions():  # never over kept versions, whatever ACTIVE says
        print(f"no index in {rt.settings.data_dir}: building the demo index from {DEMO_CORPUS.name}",
              file=sys.stderr)
        rt.default.load()
        args.index_type = args.nlist = args.nprobe = args.m = args.ef_construction = args.ef_search = None
        args.beta = args.gamma = args.dim = None
        _build(rt.default, args, read_jsonl(DEMO_CORPUS))
    base = f"http://{args.host}:{args.port}"
    rt.announce_token()  # to the console, never logged: in full only when generated now
    if rt.token.from_settings:
        admin_header = "Authorization: Bearer $WHITEVEC_ADMIN_TOKEN"
    else:
        admin_header = f"Authorization: Bearer $({_self_command()} token --data-dir {shlex.quote(str(rt.settings.data_dir))})"
    access = rt.gate.read_access()
    key = (' -H "Authorization: Bearer $WHITEVEC_API_KEY"' if rt.settings.api_key is not None
           else "" if access["open"] else f' -H "{admin_header}"')  # closed: the admin token reads every collection
    print(f"""
whitevec on {base}   (console: {base}/console, API docs: {base}/docs)
searching is {"open" if access["open"] else "closed to anonymous callers"}: {access["why"]}
try:
    curl -s {base}/search -H 'content-type: application/json'{key} -d '{{"query": "will it rain tomorrow?", "k": 3}}'
    curl -s {base}/embed -H 'content-type: application/json'{key} -d '{{"texts": ["hello world"]}}'
    curl -s {base}/admin/jobs -H "{admin_header}"
""", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """The admin token alone on stdout (for `curl -H "Authorization: Bearer $(whitevec token)"`)."""
    from whitevec.service.engine.admin_token import TOKEN_FILE, AdminToken

    settings = settings_from(args)
    secret = settings.admin_token.get_secret_value() if settings.admin_token else None
    token = AdminToken(secret, settings.data_dir)
    if args.rotate:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        value = token.rotate()
        print(f"whitevec: a new admin token is in {token.path}; a running server takes it at its next request",
              file=sys.stderr)
    else:  # never invented here: a token no server uses would only mislead
        found = token.stored()
        if found is None:
            raise WhitevecError(f"no admin token in {settings.data_dir}: a server creates {TOKEN_FILE} there on its "
                                f"first start (whitevec serve --data-dir {settings.data_dir}); is this the server's "
                                "--data-dir? `--rotate` writes one now")
        value = found
    print(value)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from whitevec.index.backup import backup

    data_dir = Path(args.data_dir or "data")
    counts = backup(data_dir, Path(args.dest))
    print(f"backed up {data_dir} to {args.dest}: {counts['files']} files, {counts['sqlite']} SQLite databases "
          "(their write-ahead logs included); serve it with --data-dir", file=sys.stderr)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("whitevec")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whitevec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"whitevec {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="evaluate encoders").add_subparsers(dest="eval_command", required=True)
    sts = ev.add_parser("sts", help="Spearman of cosine vs gold score on sentence1<TAB>sentence2<TAB>score lines")
    sts.add_argument("file")
    add_model_args(sts)
    sts.add_argument("--beta", type=float, nargs="+", default=[1.0], help="mean-removal weights (default 1)")
    sts.add_argument("--gamma", type=float, nargs="+", default=[1.0], help="variance-equalisation weights (default 1)")
    sts.add_argument("--dim", type=int, nargs="+", default=None, help="kept dims (default: all)")
    sts.add_argument("--fit-file", default=None, help="fit whitening on this file's sentences instead of FILE's")
    sts.add_argument("--json", action="store_true", help="print exactly one JSON object")
    sts.add_argument("--plot", default=None, metavar="OUT.png", help="draw Spearman against dim")
    sts.set_defaults(func=cmd_eval_sts)
    search = ev.add_parser("search", help="hit@1 and MRR@10 of dense, lexical and fused search on labelled pairs "
                           "(corpus: their second sentences; queries: first sentences of pairs scored >= 4)")
    search.add_argument("file", help="sentence1<TAB>sentence2<TAB>score lines")
    add_model_args(search)
    search.add_argument("--corpus", default=None, help="more corpus sentences, one per line (distractors)")
    search.add_argument("--beta", type=float, default=0.0, help="whitening β of the dense side (default 0)")
    search.add_argument("--gamma", type=float, default=0.0, help="whitening γ of the dense side (default 0)")
    search.add_argument("--dim", type=int, default=None, help="kept dims of the dense side (default all)")
    search.add_argument("--k1", type=float, default=1.2, help="BM25 k1 (default 1.2)")
    search.add_argument("--b", type=float, default=0.75, help="BM25 b (default 0.75)")
    search.add_argument("--seed", type=int, default=0, help="which half of the pairs chooses (default 0)")
    search.add_argument("--json", action="store_true", help="print exactly one JSON object")
    search.add_argument("--plot", default=None, metavar="OUT.png", help="draw held-out hit@1 against alpha")
    search.set_defaults(func=cmd_eval_search)

    serve = sub.add_parser("serve", help="run the HTTP service (settings also from WHITEVEC_* variables)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    serve.add_argument("--port", type=port_number, default=8000, help="TCP port (default 8000); checked before anything loads")
    serve.add_argument("--data-dir", default=None,
                       help="versions, jobs, the admin token and the import folder (default ./data, or WHITEVEC_DATA_DIR)")
    serve.add_argument("--log-level", default="info", help="uvicorn's: critical, error, warning, info (default), debug")
    serve.add_argument("--demo", action="store_true", help="build the bundled demo index first if none exists")
    add_model_args(serve)
    serve.set_defaults(func=cmd_serve)

    idx = sub.add_parser("index", help="manage the index").add_subparsers(dest="index_command", required=True)
    build = idx.add_parser("build", help="build and activate a new version from a JSONL file of documents")
    build.add_argument("file", help="JSONL: one {\"id\", \"text\", \"metadata\"?} object per line")
    build.add_argument("--data-dir", default=None, help="the data dir to build into (default ./data, or WHITEVEC_DATA_DIR)")
    build.add_argument("--collection", default="default", help="the collection to build (created if missing)")
    add_model_args(build)
    _index_args(build)
    build.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="encode on a Ray cluster: 'local' starts one here, 'auto' joins the one running here, "
                            "or ray://host:10001; FILE and the model folder must be at the same paths on its nodes")
    build.add_argument("--ray-workers", type=int, default=None,
                       help="encoder actors on Ray (default: one per GPU, else one per CPU)")
    build.set_defaults(func=cmd_index_build)

    add_collections_parser(sub)

    add_train_parser(sub)

    tok = sub.add_parser("token", help="print the admin token alone on stdout (generated once, kept in the data "
                         "dir with mode 0600; WHITEVEC_ADMIN_TOKEN wins when set)")
    tok.add_argument("--data-dir", default=None, help="the server's data dir (default ./data, or WHITEVEC_DATA_DIR)")
    tok.add_argument("--rotate", action="store_true",
                     help="replace it with a new one and print that; a running server takes it at its next request")
    tok.set_defaults(func=cmd_token, model=None, pooling=None, tokenizer=None, max_length=None, device=None,
                     batch_size=None)

    bk = sub.add_parser("backup", help="copy a data dir consistently, also while its server runs "
                        "(change logs read with their write-ahead logs)")
    bk.add_argument("dest", help="a new folder for the copy (serve it with --data-dir DEST)")
    bk.add_argument("--data-dir", default=None, help="the data dir to copy (default ./data)")
    bk.set_defaults(func=cmd_backup)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not faulthandler.is_enabled() and sys.__stderr__ is not None:
        faulthandler.enable(sys.__stderr__)  # a native library's crash prints each thread's stack, not just "Aborted"
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "serve" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except WhitevecError as exc:
        print(f"whitevec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("whitevec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
