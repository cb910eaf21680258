"""A data dir written by the release before collections (its code taken from git) upgrades in place, and a
kill -9 at any moment of that first start leaves a data dir the next start serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ADMIN, demo_documents, serving

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: The last commit whose data dirs hold versions/ at their root.
RELEASE = "b21ec96"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def release_tree(tmp_path_factory) -> Path:
    """whitevec/{models,index,service} as the release had them, for PYTHONPATH."""
    out = tmp_path_factory.mktemp("release")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", RELEASE, "models", "index", "service"],
                             capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"git history with commit {RELEASE} is not available here: {archive.stderr.decode()[:200]}")
    (out / "whitevec").mkdir()
    subprocess.run(["tar", "-x", "-C", str(out / "whitevec")], input=archive.stdout, check=True)
    return out


def release_build(release_tree: Path, data: Path, model: Path) -> dict:
    """`whitevec index build` run by the release's code."""
    docs = data.parent / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in demo_documents(2)))
    env = {**os.environ, "PYTHONPATH": str(release_tree)}
    done = subprocess.run([sys.executable, "-c", "import sys; from whitevec.service.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "index", "build", str(docs), "--data-dir", str(data),
                           "--model", str(model), "--device", "cpu", "--dim", "8"],
                          env=env, capture_output=True, text=True, cwd=data.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


async def test_a_data_dir_of_the_release_upgrades_in_place(settings, release_tree, tiny_model_dir):
    built = release_build(release_tree, settings.data_dir, tiny_model_dir)
    assert (settings.data_dir / "versions" / built["version"]).is_dir()  # the release's layout
    async with serving(settings) as (app, client):
        assert (settings.data_dir / "collections" / "default" / "versions" / built["version"]).is_dir()
        assert not (settings.data_dir / "versions").exists()
        hit = (await client.post("/search", json={"query": "rain", "k": 3})).json()
        assert hit["version"] == built["version"] and len(hit["results"][0]["hits"]) == 3
        assert (await client.post("/embed", json={"texts": ["x"]})).json()["dim"] == 8
        jobs = (await client.get("/admin/jobs", headers=ADMIN)).json()
        assert jobs == [] or all(j["collection"] == "default" for j in jobs)


def test_kill_9_during_the_first_start_never_loses_the_data_dir(tmp_path, release_tree, tiny_model_dir):
    """Start the new server on the release's data dir and kill -9 it after a growing delay; after each kill
    either layout is whole, and the last start serves the release's version."""
    data = tmp_path / "data"
    built = release_build(release_tree, data, tiny_model_dir)
    env = {**os.environ, "WHITEVEC_DATA_DIR": str(data), "WHITEVEC_MODEL_DIR": str(tiny_model_dir),
           "WHITEVEC_DEVICE": "cpu", "WHITEVEC_ADMIN_TOKEN": "t"}
    script = ("from whitevec.service.engine.runtime import Runtime; from whitevec.service.engine.settings import Settings; "
              "rt = Runtime(Settings()); rt.load(); print('loaded', rt.default.bundle.version, flush=True)")
    for delay in (0.05, 0.2, 0.4, 0.8, 1.5):
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        old = (data / "versions" / built["version"] / "manifest.json").is_file()
        new = (data / "collections" / "default" / "versions" / built["version"] / "manifest.json").is_file()
        assert old != new, f"after a kill at {delay}s: old layout {old}, new layout {new}"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["loaded", built["version"]], done.stderr[-2000:]
