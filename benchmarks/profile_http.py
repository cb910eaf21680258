"""Where the HTTP path's CPU goes under load: py-spy samples a running server, the script prints a table.

    pip install -e '.[bench]'            # py-spy
    python benchmarks/profile_http.py [--engine auto] [--clients 8] [--texts 32] [--seconds 20]
                                      [--raw /tmp/whitevec-profile.txt]
    python benchmarks/profile_http.py --tiny     # a smoke run (CI): 3 seconds, no table if py-spy cannot attach

A `whitevec serve` answers /v1/embeddings under `--clients` × `--texts` (STS-B en sentences, peers.py's load
generator) while `py-spy record --native --threads` samples it (on-CPU samples only). The first table is the
share of CPU samples per thread (event loop, tokenizer, model, output, ORT/OpenMP workers, tokenizers'
rayon pool); the second the functions that hold the most samples, with the thread they ran on. `--raw` keeps
py-spy's stacks (collapsed format, for a flame graph tool). The py-spy command is printed, to rerun by hand.
py-spy pauses the process at each sample, so the shares say where time goes, not how much the server does;
the first table, per-thread CPU from /proc, says that.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _util import cpu_flags_line, start_server, sts_sentences
from peers import TOKEN, drive, embed_bodies


def thread_kind(name: str) -> str:
    """Group threads by their job (py-spy names them by the OS thread name or the Python one)."""
    for prefix, kind in (("whitevec-model", "model thread"), ("whitevec-tokenize", "tokenizer thread"),
                         ("whitevec-output", "output thread"), ("MainThread", "event loop"),
                         ("ThreadPoolExecutor", "other Python pool"), ("rayon", "tokenizers' rayon pool")):
        if name.startswith(prefix):
            return kind
    return f"native: {name}" if name else "native (unnamed: ORT or OpenMP workers)"


#: Frames of a thread that waits (py-spy's native mode samples those too): counted as idle, not as work.
WAITING = ("PyThread_acquire_lock_timed", "epoll_wait", "epoll_pwait", "pthread_cond_wait", "uv__io_poll", "select.select", "Condition.wait",
           "_queue_SimpleQueue_get", "sem_wait", "sleep (")


def parse(raw: Path) -> tuple[collections.Counter, collections.Counter, int]:
    """py-spy's raw (collapsed) output: `thread (tid): name;frame;frame... count` per line; waiting stacks
    are dropped, so shares are of the CPU work the process did."""
    threads: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any(w in frame for frame in frames[-4:] for w in WAITING):
            continue
        kind = thread_kind(re.sub(r"^thread \((0x)?[0-9A-Fa-f]+\):?\s*", "", frames[0]).strip().strip('"'))
        frames = [f for f in frames[1:] if f]
        n = int(count)
        total += n
        threads[kind] += n
        python = [f for f in frames if ".py:" in f]
        leaf = python[-1] if python else (frames[-1] if frames else "?")
        leaves[(kind, re.sub(r"\s*\(.*?/(site-packages|whitevec)/", " (", leaf))] += n
    return threads, leaves, total


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name of a process, from /proc (Linux): every thread, the
    ORT and OpenMP workers py-spy does not sample included."""
    out: dict[str, float] = collections.defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[re.sub(r"[-_]?\d+$", "", name) or name] += (int(fields[11]) + int(fields[12])) / tick
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--raw", type=Path, default=None, help="also keep py-spy's raw stacks here")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: 3 seconds of load")
    args = parser.parse_args()
    if args.tiny:
        args.seconds = 3
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    sentences = sts_sentences(20_000)
    with tempfile.TemporaryDirectory() as tmp:
        base, proc = start_server(Path(tmp) / "data", TOKEN, env={"WHITEVEC_ENGINE": args.engine})
        raw = Path(tmp) / "profile.txt"
        cmd = [spy, "record", "--pid", str(proc.pid), "--native", "--threads", "--rate", "200", "--duration",
               str(args.seconds), "--format", "raw", "--output", str(raw)]
        print("$ " + " ".join(cmd), file=sys.stderr)
        try:
            warm = embed_bodies(sentences, args.texts, 64 * args.texts, "whitevec", 0)
            asyncio.run(drive(base, "/v1/embeddings", warm, args.clients))
            stop = threading.Event()
            counts = {"sentences": 0}

            def load() -> None:
                offset = 0
                while not stop.is_set():
                    bodies = embed_bodies(sentences, args.texts, 16 * args.clients * args.texts, "whitevec", offset)
                    asyncio.run(drive(base, "/v1/embeddings", bodies, args.clients))
                    counts["sentences"] += 16 * args.clients * args.texts
                    offset += 16 * args.clients * args.texts

            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            before, started = thread_cpu(proc.pid), time.perf_counter()
            spied = subprocess.run(cmd, capture_output=True, text=True)
            after, wall = thread_cpu(proc.pid), time.perf_counter() - started
            stop.set()
            loader.join()
        finally:
            proc.terminate()
            proc.wait()
        if spied.returncode != 0 or not raw.is_file():
            message = f"py-spy could not sample the server ({spied.stderr.strip()[-300:]})"
            if args.tiny:  # containers without ptrace: the smoke run only checks that the script runs
                print(message + "; smoke run, no table")
                return
            raise SystemExit(message + ": run as root or with CAP_SYS_PTRACE")
        if args.raw is not None:
            shutil.copy(raw, args.raw)
        threads, leaves, total = parse(raw)
    cores = {name: (after.get(name, 0) - before.get(name, 0)) / wall for name in after}
    print(f"cores used per thread (from /proc, {wall:.0f} s under load, py-spy's own cost included):\n")
    print("| thread | cores |\n|---|---:|")
    for name, used in sorted(cores.items(), key=lambda kv: -kv[1]):
        if used >= 0.005:
            print(f"| {name} | {used:.2f} |")
    print(f"| all | {sum(cores.values()):.2f} |\n")
    print(f"{os.cpu_count()} cores, CPU flags: {cpu_flags_line()}; engine {args.engine}; "
          f"{args.clients} clients × {args.texts} texts; {total} working samples over {args.seconds} s at 200 Hz "
          f"(Python threads; ORT/OpenMP workers are not sampled)\n")
    print("| thread | share of CPU samples |\n|---|---:|")
    for kind, n in threads.most_common():
        print(f"| {kind} | {n / max(total, 1):.1%} |")
    print("\n| function (innermost Python frame, else native) | thread | share |\n|---|---|---:|")
    for (kind, leaf), n in leaves.most_common(args.top):
        print(f"| {leaf[:110]} | {kind} | {n / max(total, 1):.1%} |")


if __name__ == "__main__":
    main()
