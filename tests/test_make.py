"""The Makefile's install steps: an editable install prints nothing but errors (setuptools' notice about
editable installs is silenced where make runs pip)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_editable_install_of_make_setup_prints_nothing():
    planned = subprocess.run(["make", "-n", "-B", "setup", f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.splitlines()
    line = next(x for x in planned if "pip install" in x and "-e ./clients" in x)
    words = shlex.split(line)
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    command = [w for w in words if w not in {f"{k}={v}" for k, v in env.items()}]
    command[0] = sys.executable  # this venv's python, whatever make's would be
    done = subprocess.run([*command, "--no-deps"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, **env})
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == "", done.stdout + done.stderr
