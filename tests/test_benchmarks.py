"""Every script in benchmarks/ runs once at a tiny size, so none rots between the runs made by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: script -> arguments of a run that takes seconds to a minute; "{tmp}" is the test's own folder.
TINY = {
    "ab_http.py": ["--tiny"],
    "auto_whitening.py": ["--tiny"],
    "batch_sweep.py": ["--tiny"],
    "body_memory.py": ["--mb", "1"],
    "collections_memory.py": ["--collections", "2", "--docs", "100"],
    "collections_quality.py": ["--tiny", "--beta", "0", "--gamma", "0"],
    "corpus_memory.py": ["--docs", "500", "--repeat", "1"],
    "encode_speed.py": ["--limit", "64", "--repeats", "1"],
    "hybrid_quality.py": ["--tiny"],
    "index_search.py": ["--n", "2000", "--queries", "50"],
    "int8_probe.py": ["--tiny", "--repeat", "1", "--out", "{tmp}/int8"],
    "lexical_index.py": ["--docs", "2000", "--queries", "30"],
    "lifecycle.py": ["--docs", "100", "--rounds", "2"],
    "long_documents.py": ["--tiny"],
    "packed_batches.py": ["--tiny"],
    "passage_scale.py": ["--tiny", "--work-dir", "{tmp}/passage-scale"],
    "peers.py": ["--engines", "auto", "--repeat", "1", "--sentences", "64", "--search-docs", "0"],
    "profile_http.py": ["--tiny"],
    "scale_out.py search": ["--docs", "300", "--queries", "20", "--repeat", "1", "--work-dir", "{tmp}/work"],
    "scale_out.py ray": ["--docs", "100", "--workers", "1", "--repeat", "1"],
    "service_latency.py": ["--docs", "200", "--requests", "20"],
    "train_auto_whitening.py": ["--tiny"],
    "train_load.py": ["--requests", "10", "--max-steps", "2"],
    "train_tune.py": ["--tiny"],
    "upsert_load.py": ["--docs", "300", "--batch", "20", "--calls", "3", "--work-dir", "{tmp}/work"],
}


def test_every_benchmark_has_a_tiny_run():
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == {name.split()[0] for name in TINY}, "add the new script to TINY with arguments of a tiny run"


@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_runs_tiny(name, tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the benchmarks read {SHARED_DATA}, which this checkout does not have beside it")
    script, *sub = name.split()
    args = [a.replace("{tmp}", str(tmp_path)) for a in TINY[name]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, script, *sub, *args], cwd=BENCHMARKS, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{name} printed nothing"
