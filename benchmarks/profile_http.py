"""Where the HTTP path's CPU goes under load: py-spy samples a running server, the script prints a table.

    pip install -e '.[bench]'            # py-spy
    python benchmarks/profile_http.py [--engine auto] [--clients 8] [--texts 32] [--seconds 20]
                                      [--raw /tmp/whitevec-profile.txt]
    python benchmarks/profile_http.py --tiny     # a smoke run (CI): 3 seconds, no table if py-spy cannot attach

A `whitevec serve` answers /v1/embeddings under `--clients` × `--texts` (STS-B en sentences, peers.py's load
generator). First, for `--seconds`, the CPU each thread uses from /proc, unsampled (the OpenVINO, ORT and
OpenMP workers included, which py-spy does not see); then `py-spy record --native --threads` samples it for as
long (on-CPU samples only). The tables: cores per thread; the event loop's work by layer (uvicorn, middleware,
FastAPI's routing and dependencies, the endpoint, tokenizing, the batcher); the share of CPU samples per
thread; the functions that hold the most samples, with the thread they ran on. `--raw` keeps py-spy's stacks
(collapsed format, for a flame graph tool). The py-spy command is printed, to rerun by hand. py-spy pauses
the process at each sample, so its shares say where time goes, not how much the server does: the first
table says that.
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

import httpx

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


#: What the event loop's work is spent on: a label per frame pattern; a sample goes to the innermost frame that
#: matches one ("dependencies" then holds the body parsing and caller check it runs, "middleware" only the
#: middleware's own code), else to asyncio and uvloop themselves.
LOOP_LAYERS = (("uvicorn: HTTP parsing and writing", ("httptools_impl.py", "parser.c", "llhttp")),
               ("middleware (Starlette's, FastAPI's, whitevec's Observe and BodyLimit)",
                ("proxy_headers.py", "middleware/errors.py", "_asgi.py", "_body_limit.py", "http/app.py",
                 "middleware/exceptions.py", "asyncexitstack.py")),
               ("FastAPI routing (finding the route)", (".matches (", "._match (", "effective_candidates")),
               ("FastAPI dependencies (body parsing, caller check)", ("solve_dependencies",)),
               ("the endpoint itself", ("run_endpoint_function",)),
               ("tokenizing (short requests, on the loop)", ("tokenizers.py",)),
               ("the batcher's loop", ("batcher.py",)))
#: Where an event-loop sample goes when no LOOP_LAYERS pattern is on its stack.
LOOP_REST = "asyncio and uvloop themselves"


def parse(raw: Path) -> tuple[collections.Counter, collections.Counter, int, dict[str, str], collections.Counter]:
    """py-spy's raw (collapsed) output: `thread (tid): name;frame;frame... count` per line; waiting stacks
    are dropped, so shares are of the CPU work the process did. Also each sampled thread's name by its id,
    and the event loop's samples per LOOP_LAYERS label."""
    threads: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    layers: collections.Counter = collections.Counter()
    names: dict[str, str] = {}
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        head = re.match(r"^thread \(((?:0x)?[0-9A-Fa-f]+)\):?\s*(.*)$", frames[0])
        name = head.group(2).strip().strip('"') if head else ""
        if head:
            names[str(int(head.group(1), 16) if head.group(1).startswith("0x") else int(head.group(1)))] = name
        if any(w in frame for frame in frames[-4:] for w in WAITING):
            continue
        kind = thread_kind(name)
        frames = [f for f in frames[1:] if f]
        n = int(count)
        total += n
        threads[kind] += n
        python = [f for f in frames if ".py:" in f]
        leaf = python[-1] if python else (frames[-1] if frames else "?")
        leaves[(kind, re.sub(r"\s*\(.*?/(site-packages|whitevec)/", " (", leaf))] += n
        if kind == "event loop":
            layers["(all)"] += n
            layers[next((label for frame in reversed(frames) for label, patterns in LOOP_LAYERS
                         if any(p in frame for p in patterns)), LOOP_REST)] += n
    return threads, leaves, total, names, layers


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread id of a process, from /proc (Linux): every thread, the
    ORT, OpenVINO and OpenMP workers py-spy does not sample included."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[task.name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def batch_stats(base: str) -> dict[str, float]:
    """The server's model batches so far, from /metrics: how many, their rows, and their text and padded tokens."""
    answer = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    answer.raise_for_status()
    text = answer.text
    out = {"batches": 0.0, "rows": 0.0, "text": 0.0, "padded": 0.0}
    for name, key in (("whitevec_batch_size_count", "batches"), ("whitevec_batch_size_sum", "rows"),
                      ('whitevec_batch_tokens_total{kind="text"}', "text"),
                      ('whitevec_batch_tokens_total{kind="padded"}', "padded")):
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        out[key] = float(match.group(1)) if match else 0.0
    return out


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
            time.sleep(1)  # the load under way
            # CPU per thread first, unsampled (py-spy pauses the process at every sample: it would slow the
            # server many times over), then py-spy for where the work goes
            done, before, started = counts["sentences"], thread_cpu(proc.pid), time.perf_counter()
            batches_before = batch_stats(base)
            time.sleep(args.seconds)
            after, wall, served = thread_cpu(proc.pid), time.perf_counter() - started, counts["sentences"] - done
            batches = {k: v - batches_before[k] for k, v in batch_stats(base).items()}
            spied = subprocess.run(cmd, capture_output=True, text=True)
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
        threads, leaves, total, names, layers = parse(raw)
    cores: dict[str, float] = collections.defaultdict(float)  # by job: a thread py-spy never saw is a native worker
    for tid, seconds in after.items():
        cores[thread_kind(names[tid]) if tid in names else "native workers (OpenVINO, ORT, OpenMP)"] += \
            (seconds - before.get(tid, 0)) / wall
    print(f"cores used per thread (from /proc, {wall:.0f} s under load, about {served / wall:.0f} sentences/s, "
          "before py-spy attached):\n")
    print("| thread | cores |\n|---|---:|")
    for name, used in sorted(cores.items(), key=lambda kv: -kv[1]):
        if used >= 0.005:
            print(f"| {name} | {used:.2f} |")
    print(f"| all | {sum(cores.values()):.2f} |\n")
    if batches["batches"]:
        print(f"model batches meanwhile (/metrics): {batches['batches']:.0f}, {batches['rows'] / batches['batches']:.1f} "
              f"rows on average; {batches['text'] / max(batches['padded'], 1):.2f} of the padded tokens were text\n")
    if layers["(all)"]:
        print("the event loop's work (share of its CPU samples, each sample to its innermost layer):\n")
        print("| layer | share |\n|---|---:|")
        for label in [label for label, _ in LOOP_LAYERS] + [LOOP_REST]:
            print(f"| {label} | {layers[label] / layers['(all)']:.0%} |")
        print()
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
