"""Job states and the training job's edges (issue 8)."""

import asyncio
import re
import sys
import threading
import time

import pytest

from tests.conftest import ADMIN, TRAIN_EXAMPLES, demo_documents, rebuild, serving, wait_job
from whitevec.service.engine.jobs import JobRunner

pytestmark = pytest.mark.anyio

FAST = {"epochs": 15, "batch_size": 12, "lr": 1e-3, "centre_lr": 1e-2, "warmup": 0.0}


def test_a_cancelled_queued_job_is_cancelled_at_once_and_stays_so(tmp_path):
    runner = JobRunner(tmp_path / "jobs.sqlite")
    runner.start()
    release, ran = threading.Event(), []
    blocking = runner.submit("block", lambda ctx: (release.wait(10), {})[1])
    queued = runner.submit("never", lambda ctx: ran.append(1) or {})
    while runner.get(blocking)["state"] != "running":
        time.sleep(0.005)
    record = runner.cancel(queued)
    assert record["state"] == "cancelled" and record["error"] == "cancelled before it started"
    release.set()
    while runner.get(blocking)["state"] != "succeeded":
        time.sleep(0.005)
    assert runner.get(blocking)["progress"]["phase"] == "done"
    runner.stop()
    assert ran == []
    again = JobRunner(tmp_path / "jobs.sqlite")
    again.start()  # a restart: the cancelled job stays cancelled
    assert again.get(queued)["state"] == "cancelled"
    again.stop()


def test_only_start_marks_a_stopped_process_jobs_failed(tmp_path):
    """A JobRunner opened beside a live one (a CLI on the same db) must not fail its jobs."""
    runner = JobRunner(tmp_path / "jobs.sqlite")
    runner.start()
    release = threading.Event()
    job = runner.submit("block", lambda ctx: (release.wait(10), {})[1])
    while runner.get(job)["state"] != "running":
        time.sleep(0.005)
    JobRunner(tmp_path / "jobs.sqlite")  # opened, not started
    assert runner.get(job)["state"] == "running"
    release.set()
    runner.stop()


def test_a_shutdown_interrupts_jobs_and_says_so(tmp_path, caplog):
    """Ctrl-C is not a cancel: what ran and what waited are `interrupted`, with when and why, logged."""
    runner = JobRunner(tmp_path / "jobs.sqlite")
    runner.start()

    def long(ctx):
        while True:
            ctx.check_cancelled()
            time.sleep(0.01)

    running = runner.submit("rebuild", long)
    queued = runner.submit("train", lambda ctx: {})
    while runner.get(running)["state"] != "running":
        time.sleep(0.005)
    runner.stop()
    for job in (running, queued):
        record = runner.get(job)
        assert record["state"] == "interrupted", record
        assert re.search(r"interrupted: the server was shut down at \d{4}-\d\d-\d\dT", record["error"])
        assert "submit it again" in record["error"] and job in caplog.text
    again = JobRunner(tmp_path / "jobs.sqlite")
    assert again.start() == []  # already final: nothing left for the next start
    assert again.get(running)["state"] == "interrupted"
    again.stop()


def test_a_start_after_a_kill_lists_the_jobs_it_left_as_interrupted(tmp_path, caplog):
    killed = JobRunner(tmp_path / "jobs.sqlite")
    killed.start()
    release = threading.Event()
    running = killed.submit("rebuild", lambda ctx: (release.wait(10), {})[1])
    queued = killed.submit("train", lambda ctx: {})
    while killed.get(running)["state"] != "running":
        time.sleep(0.005)
    # killed -9: nothing more is recorded; the next process on the data dir starts
    killed._queue = __import__("queue").Queue()  # the dead worker takes nothing more
    found = JobRunner(tmp_path / "jobs.sqlite").start()
    assert {j["id"] for j in found} == {running, queued} and {j["kind"] for j in found} == {"rebuild", "train"}
    after = JobRunner(tmp_path / "jobs.sqlite")
    assert after.get(running)["state"] == after.get(queued)["state"] == "interrupted"
    assert "killed or crashed) while this job was running" in after.get(running)["error"]
    assert "before this job started" in after.get(queued)["error"]
    assert f"job {running} (rebuild) was interrupted by the server's last stop" in caplog.text
    release.set()


async def test_a_non_json_line_from_the_training_process_fails_the_job_and_ends_it(settings, tmp_path):
    pid_file = tmp_path / "child.pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); print('hello'); time.sleep(60)"
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        app.state.runtime.training.training_command = [sys.executable, "-c", script]
        r = await client.post("/admin/train", json={"examples": TRAIN_EXAMPLES, "max_steps": 1}, headers=ADMIN)
        started = time.monotonic()
        job = await wait_job(client, r.json()["job_id"], timeout=30)
        assert job["state"] == "failed" and "not one of its JSON events ('hello')" in job["error"]
        assert time.monotonic() - started < 20
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            for _ in range(50):  # the child was killed (and reaped)
                import os
                os.kill(pid, 0)
                await asyncio.sleep(0.1)
        assert not (settings.data_dir / "training").exists() or not any((settings.data_dir / "training").iterdir())


@pytest.mark.slow
async def test_a_rebuild_queued_behind_train_activate_uses_the_new_model(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        r = await client.post("/admin/train", json={"examples": TRAIN_EXAMPLES, **FAST, "activate": True},
                              headers=ADMIN)
        train_id = r.json()["job_id"]
        name = r.json()["model_name"]
        r = await client.post("/admin/index/rebuild", json={"documents": demo_documents(2)}, headers=ADMIN)
        rebuild_job = await wait_job(client, r.json()["job_id"])
        assert (await wait_job(client, train_id))["state"] == "succeeded"
        assert rebuild_job["state"] == "succeeded" and rebuild_job["result"]["model"] == name
        ready = (await client.get("/readyz")).json()
        assert ready["model"] == name and ready["version"] == rebuild_job["result"]["version"]
        assert not any((settings.data_dir / "training").iterdir())  # work folders are cleaned


def test_generated_model_names_are_bounded_and_unique(settings):
    from whitevec.service.engine.runtime import Runtime

    rt = Runtime(settings)
    name = "all-MiniLM-L6-v2"
    seen = set()
    for _ in range(30):  # thirty generations of train + activate
        out = rt.training.model_output_dir(None, base=name)
        assert out.name not in seen
        seen.add(out.name)
        out.mkdir(parents=True)
        name = out.name
        assert re.fullmatch(r"all-MiniLM-L6-v2-ft-\d{8}T\d{6}-[0-9a-f]{4}", name), name
    long = rt.training.model_output_dir(None, base="x" * 300 + "-amsoftmax-20260101T000000")
    assert len(long.name) <= 40 + 25


def test_a_job_killed_after_activating_its_version_is_succeeded_at_restart(tmp_path):
    """The final state follows what is on disk: a version in the activation history means the job's
    work landed, whatever the record said when the process died."""
    runner = JobRunner(tmp_path / "jobs.sqlite")
    runner.start()
    release = threading.Event()
    landed = runner.submit("index.rebuild", lambda ctx: (ctx.checkpoint(built_version="v-landed"), release.wait(10)))
    lost = runner.submit("index.rebuild", lambda ctx: {})
    while runner.get(landed)["detail"].get("built_version") != "v-landed":  # running, and past its checkpoint
        time.sleep(0.005)
    # kill -9 here: a new runner on the same records, as the next start sees them
    again = JobRunner(tmp_path / "jobs.sqlite")
    again.start(activated=lambda version: version == "v-landed")
    record = again.get(landed)
    assert record["state"] == "succeeded" and record["result"]["version"] == "v-landed"
    assert again.get(lost)["state"] == "interrupted" and "submit it again" in again.get(lost)["error"]
    release.set()
    again.stop()


def test_on_end_runs_once_however_a_job_ends(tmp_path):
    runner = JobRunner(tmp_path / "jobs.sqlite")
    runner.start()
    ended: list[str] = []
    release = threading.Event()
    first = runner.submit("block", lambda ctx: (release.wait(10), {})[1], on_end=lambda: ended.append("ok"))
    queued = runner.submit("never", lambda ctx: {}, on_end=lambda: ended.append("cancelled"))
    failing = runner.submit("fails", lambda ctx: 1 / 0, on_end=lambda: ended.append("failed"))
    while runner.get(first)["state"] != "running":
        time.sleep(0.005)
    runner.cancel(queued)
    release.set()
    while runner.get(failing)["state"] not in ("failed", "succeeded"):
        time.sleep(0.005)
    runner.stop()
    assert ended == ["cancelled", "ok", "failed"]


@pytest.mark.slow
def test_a_training_child_dies_with_its_server(tmp_path):
    """kill -9 of the server takes its training process with it (no orphan keeps training)."""
    import os
    import signal
    import subprocess

    script = ("import subprocess, sys, time\n"
              "from whitevec.service.engine.training_runs import die_with_parent\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], preexec_fn=die_with_parent)\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the child outlived its parent")
    if os.path.exists(f"/proc/{child}"):  # a zombie of init's: not running any more
        assert open(f"/proc/{child}/stat").read().split()[2] == "Z"


def wait_final(runner: JobRunner, job_id: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = runner.get(job_id)
        if record["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
            return record
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} still {runner.get(job_id)['state']}")


def test_the_worker_survives_any_error_in_recording_a_job(tmp_path, monkeypatch):
    """A record that cannot be written (a damaged database, a result JSON cannot hold) or an end hook that
    raises fails that job at most: the queue goes on, the worker thread stays alive."""
    import sqlite3

    runner = JobRunner(tmp_path / "jobs.sqlite")
    runner.start()
    original, broken = runner._write, []

    def write(job_id, **fields):
        if job_id in broken and fields.get("state") == "running":
            raise sqlite3.DatabaseError("database disk image is malformed")
        return original(job_id, **fields)

    monkeypatch.setattr(runner, "_write", write)
    unrecordable = runner.submit("x", lambda ctx: {"value": object()})
    hook = runner.submit("x", lambda ctx: {}, on_end=lambda: 1 / 0)
    broken.append(runner.submit("x", lambda ctx: {}))
    after = runner.submit("x", lambda ctx: {"fine": True})
    assert wait_final(runner, after)["result"] == {"fine": True}
    record = wait_final(runner, unrecordable)
    assert record["state"] == "failed" and "could not be recorded" in record["error"]
    assert wait_final(runner, hook)["state"] == "succeeded"
    record = wait_final(runner, broken[0])
    assert record["state"] == "failed" and "could not be written when it started" in record["error"]
    assert runner._thread.is_alive()
    runner.stop()


def test_a_locked_database_is_waited_for_not_fatal(tmp_path, monkeypatch):
    import sqlite3

    runner = JobRunner(tmp_path / "jobs.sqlite")
    runner.start()
    original, fails = runner._write, [2]

    def write(job_id, **fields):
        if fields.get("state") == "succeeded" and fails[0]:
            fails[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        return original(job_id, **fields)

    monkeypatch.setattr(runner, "_write", write)
    job = runner.submit("x", lambda ctx: {"n": 1})
    assert wait_final(runner, job)["state"] == "succeeded" and fails == [0]
    runner.stop()


def test_damaged_job_records_are_moved_aside_and_the_server_starts(settings):
    from whitevec.service.engine.runtime import Runtime

    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "jobs.sqlite").write_bytes(b"not a database at all " * 200)
    rt = Runtime(settings)
    try:
        assert rt.jobs.quarantined is not None and rt.jobs.quarantined.name.startswith("jobs.sqlite.damaged-")
        assert rt.jobs.quarantined.read_bytes().startswith(b"not a database")  # kept, not deleted
        assert rt.jobs.counts()["queued"] == 0
    finally:
        rt.jobs.stop()


def test_damaged_access_keys_refuse_the_start_naming_the_file(settings):
    from whitevec.models.errors import WhitevecError
    from whitevec.service.engine.runtime import Runtime

    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "keys.sqlite").write_bytes(b"garbage" * 500)
    with pytest.raises(WhitevecError, match=r"keys.sqlite \(access keys\) is damaged: .*restore it from a backup"):
        Runtime(settings)
