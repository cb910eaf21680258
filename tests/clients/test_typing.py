"""The SDK type-checks under mypy --strict, and so does a program using every public method of it
(typing_example.py): the answers have the types an IDE shows, and common mistakes are caught."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_strict_on_the_sdk_and_a_program_using_it(request, tmp_path):
    pytest.importorskip("mypy", reason="mypy is not installed (it comes with the dev extra: make test)")
    # under .pytest_cache (ignored by git, kept between runs) unless the cache plugin is off
    cache = request.config.cache.mkdir("mypy") if hasattr(request.config, "cache") else tmp_path
    run = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "clients/pyproject.toml",
                          "--cache-dir", str(cache), "clients/whitevec_client", "tests/clients/typing_example.py"],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MYPYPATH": "clients"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found" in run.stdout, run.stdout


def test_the_wheel_ships_py_typed(tmp_path):
    """PEP 561: without py.typed in the installed package, type checkers ignore its annotations."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT / "clients")], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("whitevec_client-*.whl")
    assert "whitevec_client/py.typed" in zipfile.ZipFile(wheel).namelist()
