"""Helpers shared by the benchmarks: a served process on loopback and percentile tables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, token: str, args: tuple[str, ...] = (), module: str = "whitevec.service.cli.main",
                 env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    """`whitevec serve` on a free loopback port; returns once /readyz answers 200. `module` and `env`
    let a benchmark start another checkout (an older commit) for a side-by-side figure."""
    port = free_port()
    env = {**os.environ, "WHITEVEC_DATA_DIR": str(data_dir), "WHITEVEC_ADMIN_TOKEN": token, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", module, "serve", "--port", str(port), "--log-level",
                             "warning", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(900):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return base, proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def has_index(data_dir: Path) -> bool:
    """A data dir with an active version (collections' layout, or the one before it)."""
    return any((data_dir / sub / "ACTIVE").is_file() for sub in ("collections/default/versions", "versions"))


def wait_job(client: httpx.Client, job_id: str, headers: dict) -> dict:
    while True:
        job = client.get(f"/admin/jobs/{job_id}", headers=headers).json()
        if job["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
            return job
        time.sleep(0.2)


def sts_sentences(limit: int) -> list[str]:
    """Distinct real sentences from STS-B (en), read at run time from ../shared/data."""
    out: dict[str, None] = {}
    for name in ("train.tsv", "dev.tsv"):
        for line in (SHARED / "sts-b-en" / name).read_text(encoding="utf-8").splitlines():
            for s in line.split("\t")[:2]:
                out.setdefault(s.strip(), None)
    return [s for s in out if s][:limit]


def read_tsv(path: Path) -> list[tuple[str, str, float]]:
    """(sentence1, sentence2, score) rows of an STS-B file; lines of another shape are skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            rows.append((parts[0].strip(), parts[1].strip(), float(parts[2])))
    return rows


def cpu_flags_line() -> str:
    """The CPU flags every speed figure is stated with (machines differ: VNNI, AMX or only AVX2)."""
    from whitevec.models.engines import cpu_flags

    named = ("avx2", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return ", ".join(f for f in named if f in cpu_flags()) or "none of " + ", ".join(named)


def pct(samples_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def long_texts(n: int, chars: int = 1000, seed: int = 0) -> list[str]:
    """`n` texts of about `chars` characters, each of STS-B (en) sentences drawn at random: long documents in
    any number (the files hold only a few hundred of consecutive sentences)."""
    sentences = sts_sentences(20_000)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picked, size = [], 0
        while size < chars:
            s = sentences[int(rng.integers(len(sentences)))]
            picked.append(s)
            size += len(s) + 1
        out.append(" ".join(picked))
    return out
