"""A/B over HTTP on a noisy machine: two or more servers side by side, taking turns, paired ratios.

    python benchmarks/ab_http.py now before@HEAD~3 [--loads 8x32 32x1] [--rounds 12] [--sentences 512]
    python benchmarks/ab_http.py auto "onnx=WHITEVEC_ENGINE:onnx" "half=WHITEVEC_ENGINE:torch-half"
    python benchmarks/ab_http.py --tiny      # a smoke run (CI): this checkout against HEAD, one round

Each side is `NAME[@GIT-REF][=ENV:VALUE,ENV:VALUE]`: a `whitevec serve --demo` with those environment
variables, running this checkout, or the commit GIT-REF (checked out in a temporary git worktree, put first
on PYTHONPATH). Every round sends `--sentences` STS-B sentences to each side in turn (the order reversed every
other round), under each load (clients × texts per request, peers.py's load generator). The table gives each
side's median sentences/s and p99, and the median and quartiles of its per-round ratio to the first side.

Why paired rounds: a small shared host's speed drifts (up to 2× within minutes here), far more than most
changes are worth; two sides measured seconds apart share that drift, so their ratio is steady where their
absolute figures are not (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _util import cpu_flags_line, start_server, sts_sentences
from peers import TOKEN, drive, embed_bodies

REPO = Path(__file__).resolve().parent.parent
#: The packages a checkout installs as whitevec.* (pyproject's package-dir).
PACKAGES = ("index", "models", "service")


@dataclass
class Side:
    name: str
    ref: str | None
    env: dict[str, str]
    rates: dict[str, list[float]] = field(default_factory=dict)
    p99: dict[str, list[float]] = field(default_factory=dict)


def parse_side(spec: str) -> Side:
    """`NAME[@REF][=ENV:VALUE,...]`."""
    head, _, envs = spec.partition("=")
    name, _, ref = head.partition("@")
    env = {}
    for pair in filter(None, envs.split(",")):
        key, sep, value = pair.partition(":")
        if not sep:
            raise SystemExit(f"side {spec!r}: write each setting as ENV:VALUE, comma-separated")
        env[key] = value
    return Side(name, ref or None, env)


def checkout(ref: str, where: Path) -> Path:
    """`ref` in a git worktree under `where`, and a folder to put first on PYTHONPATH that imports it as
    whitevec.*; returns that folder."""
    tree = where / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), ref], check=True)
    shim = where / "path" / "whitevec"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("")
    for package in PACKAGES:
        (shim / package).symlink_to(tree / package)
    return shim.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sides", nargs="*", help="NAME[@GIT-REF][=ENV:VALUE,...]; the first is the baseline")
    parser.add_argument("--loads", nargs="+", default=["8x32", "32x1"], help="CLIENTSxTEXTS (default 8x32 32x1)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--sentences", type=int, default=512, help="sentences per side, load and round")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: this checkout against its HEAD on the torch engine, one round of 32 sentences")
    args = parser.parse_args()
    if args.tiny:
        args.sides, args.loads, args.rounds, args.sentences = ["a", "b@HEAD=WHITEVEC_ENGINE:torch"], ["4x8"], 1, 32
    if len(args.sides) < 2:
        parser.error("name at least two sides")
    sides = [parse_side(spec) for spec in args.sides]
    loads = [tuple(int(x) for x in load.split("x")) for load in args.loads]
    pool = sts_sentences(20_000)
    work = tempfile.TemporaryDirectory()
    servers: list[subprocess.Popen] = []
    trees = []
    try:
        bases = []
        for i, side in enumerate(sides):
            env = dict(side.env)
            if side.ref is not None:
                folder = Path(work.name) / f"ref{i}"
                env["PYTHONPATH"] = str(checkout(side.ref, folder))
                trees.append(folder / "tree")
            print(f"starting {side.name}...", file=sys.stderr)
            base, proc = start_server(Path(work.name) / f"data{i}", TOKEN, ("--demo",), env=env)
            bases.append(base)
            servers.append(proc)
        for base in bases:  # each warmed up before any is measured
            for conc, per in loads:
                asyncio.run(drive(base, "/v1/embeddings", embed_bodies(pool, per, max(conc * per, 64), "whitevec", 0),
                                  conc))
        for r in range(args.rounds):
            order = range(len(sides)) if r % 2 == 0 else reversed(range(len(sides)))
            for i in order:
                for conc, per in loads:
                    n = max(args.sentences // per, conc) * per
                    bodies = embed_bodies(pool, per, n, "whitevec", n * (r + 1))
                    wall, latencies = asyncio.run(drive(bases[i], "/v1/embeddings", bodies, conc))
                    key = f"{conc} × {per}"
                    sides[i].rates.setdefault(key, []).append(n / wall)
                    sides[i].p99.setdefault(key, []).append(float(np.percentile(latencies, 99)) * 1000)
            print(f"  round {r + 1} of {args.rounds}", file=sys.stderr)
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait()
        for tree in trees:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        work.cleanup()
    print(f"\n{len(sides)} servers side by side, {args.rounds} rounds of {args.sentences} STS-B sentences per side and "
          f"load; CPU flags: {cpu_flags_line()}\n")
    print(f"| load | side | sentences/s | p99 ms | per-round ratio to {sides[0].name} | quartiles |")
    print("|---|---|---:|---:|---:|---|")
    for conc, per in loads:
        key = f"{conc} × {per}"
        for side in sides:
            ratios = [a / b for a, b in zip(side.rates[key], sides[0].rates[key])]
            print(f"| {key} | {side.name} | {statistics.median(side.rates[key]):.0f} | "
                  f"{statistics.median(side.p99[key]):.0f} | {statistics.median(ratios):.2f}× | "
                  f"{np.percentile(ratios, 25):.2f}-{np.percentile(ratios, 75):.2f} |")


if __name__ == "__main__":
    main()
