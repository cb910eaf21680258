import json
import re
import subprocess
import sys

import pytest

from whitevec.service.engine.admin_token import AdminToken
from whitevec.service.cli.main import main
from tests.conftest import SHARED_DATA, free_port


def test_eval_sts_json_is_one_object_with_every_combination(tiny_model_dir, pairs_file, capsys):
    rc = main(["eval", "sts", str(pairs_file), "--model", str(tiny_model_dir), "--beta", "0", "1",
               "--gamma", "0", "0.5", "1", "--dim", "32", "8", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert {"model", "pooling", "n_pairs", "raw", "results"} <= report.keys()
    assert report["n_pairs"] == 10 and report["pooling"] == "first-last-avg"
    combos = {(r["beta"], r["gamma"], r["dim"]) for r in report["results"]}
    assert combos == {(b, g, d) for b in (0, 1) for g in (0, 0.5, 1) for d in (32, 8)}
    # 20 sentences fit at most rank 19: with γ > 0, dim 32 would be amplified noise (the service serves ≤ rank)
    assert report["rank"] < 32
    for r in report["results"]:
        if r["gamma"] > 0 and r["dim"] > report["rank"]:
            assert r["spearman"] is None and f"above the fit's rank {report['rank']}" in r["skipped"]
        else:
            assert -100 <= r["spearman"] <= 100 and "skipped" not in r
    # β=γ=0 at full dim is a rotation: cosines, hence the score, equal the raw one.
    rotation = next(r for r in report["results"] if (r["beta"], r["gamma"], r["dim"]) == (0, 0, 32))
    assert rotation["spearman"] == pytest.approx(report["raw"], abs=1e-3)


def test_eval_sts_table_marks_best_and_plots(tiny_model_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "plot.png"
    rc = main(["eval", "sts", str(pairs_file), "--model", str(tiny_model_dir), "--pooling", "cls",
               "--dim", "32", "16", "--plot", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "raw (no whitening)" in text and "8.33" in text
    assert sum(line.startswith("*") for line in text.splitlines()) == 1
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    skipped = [line for line in text.splitlines() if line.rstrip().endswith("—")]
    assert len(skipped) == 1 and skipped[0].split()[:3] == ["1", "1", "32"]  # β=γ=1 at dim 32: above rank
    assert "— : dim above the fit's rank" in text and "the service serves at most dim" in text


def test_eval_sts_fit_file(tiny_model_dir, pairs_file, tmp_path, capsys):
    fit = tmp_path / "fit.txt"
    fit.write_text("\n".join(f"the {w} sat on the mat" for w in "cat dog house car tree river city".split() * 6))
    rc = main(["eval", "sts", str(pairs_file), "--model", str(tiny_model_dir), "--fit-file", str(fit), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_fit_vectors"] == 42 and report["fit_on"] == str(fit)


def test_eval_search_prints_the_table_the_choice_and_a_plot(tiny_model_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"report zq{i} on kx{i}\tkx{i} and zq{i} summary\t4.5\n" for i in range(12))
                     + "".join(f"plain text {i}\tsomething else {i}\t0.5\n" for i in range(6)))
    extra = tmp_path / "corpus.txt"
    extra.write_text("a distractor sentence\nanother one\n\n")
    out = tmp_path / "fusion.png"
    rc = main(["eval", "search", str(pairs), "--model", str(tiny_model_dir), "--corpus", str(extra),
               "--plot", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if re.match(r"(dense|lexical|rrf|weighted [0-9.]+) +[0-9.]+ ", line)]
    assert len(rows) == 12 and sum(line.endswith("*") for line in rows) == 1 and "held-out" in text
    assert "over 20 corpus sentences" in text  # 18 second sentences and 2 distractors
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc = main(["eval", "search", str(pairs), "--model", str(tiny_model_dir), "--json", "--k1", "2", "--b", "0"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["bm25"] == {"k1": 2.0, "b": 0.0} and report["split"]["choose"] == 6
    lexical = next(r for r in report["table"] if r["candidate"] == "lexical")
    assert lexical["report"]["hit_at_1"] == 100.0  # every paraphrase shares its two rare words


def test_bad_inputs_exit_2_with_a_message(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("one\ttwo\tthree\n")
    assert main(["eval", "sts", str(bad), "--model", str(tiny_model_dir)]) == 2
    assert "bad.tsv:1: expected sentence1<TAB>sentence2<TAB>score" in capsys.readouterr().err
    assert main(["eval", "sts", str(bad), "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_on_real_data_with_bundled_model(tmp_path):
    """The installed `whitevec` command on 200 real STS-B pairs: a trained model scores well."""
    source = SHARED_DATA / "sts-b-en" / "dev.tsv"
    if not source.is_file():
        pytest.skip("../shared/data is not present")
    sample = tmp_path / "dev200.tsv"
    sample.write_text("".join(source.read_text(encoding="utf-8").splitlines(keepends=True)[:200]), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "whitevec.service.cli.main", "eval", "sts", str(sample), "--beta", "0", "1",
                           "--gamma", "0", "1", "--dim", "384", "64", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["model"] == "all-MiniLM-L6-v2" and report["pooling"] == "last-avg"
    assert report["raw"] > 75
    by = {(r["beta"], r["gamma"], r["dim"]): r["spearman"] for r in report["results"]}
    assert by[(0.0, 0.0, 384)] == pytest.approx(report["raw"], abs=0.01)


def test_index_build_and_train_activate_from_the_shell(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from whitevec.index.versions import VersionStore

    monkeypatch.setenv("WHITEVEC_MIN_APPROX_VECTORS", "2")  # a real hnsw on 12 documents
    from tests.conftest import TRAIN_EXAMPLES, demo_documents

    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(d) for d in demo_documents()))
    data = tmp_path / "data"
    assert main(["index", "build", str(docs), "--data-dir", str(data), "--model", str(tiny_model_dir),
                 "--index-type", "hnsw", "--dim", "16"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["documents"] == 12 and built["index"]["spec"]["type"] == "hnsw"
    assert VersionStore(data / "collections" / "default").active() == built["version"]

    examples = tmp_path / "train.jsonl"
    examples.write_text("\n".join(json.dumps(e) for e in TRAIN_EXAMPLES))
    assert main(["train", str(examples), "--data-dir", str(data), "--epochs", "3", "--batch-size", "6",
                 "--out", str(tmp_path / "tuned"), "--activate"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 6 and summary["n_classes"] == 3
    active = VersionStore(data / "collections" / "default").active()
    assert active == summary["activation"]["version"] != built["version"]
    manifest = VersionStore(data / "collections" / "default").manifest(active)
    assert manifest["model"]["path"] == str((tmp_path / "tuned").resolve())
    assert manifest["index"]["spec"]["type"] == "hnsw" and manifest["whitening"]["params"]["dim"] == 16


@pytest.mark.slow
def test_version_and_clean_one_line_errors(tmp_path):
    from importlib.metadata import version

    run = lambda *args: subprocess.run([sys.executable, "-m", "whitevec.service.cli.main", *args],  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"whitevec {version('whitevec')}"
    proc = run("index", "build", str(tmp_path / "missing.jsonl"), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "missing.jsonl is not a file" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "a", "text": "\xff"}\n')
    proc = run("index", "build", str(bad), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2 and "bad.jsonl:1: not UTF-8" in proc.stderr and "Traceback" not in proc.stderr
    assert "Could not load library" not in proc.stderr  # FAISS's loader noise is silenced


def test_index_build_with_auto_whitening_and_a_named_collection(tiny_model_dir, tmp_path, capsys):
    from tests.conftest import demo_documents
    from tests.service.test_auto_whitening import write_pairs
    from whitevec.index.versions import VersionStore

    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(d) for d in demo_documents(3)))
    pairs = tmp_path / write_pairs(tmp_path)
    data = tmp_path / "data"
    assert main(["index", "build", str(docs), "--data-dir", str(data), "--model", str(tiny_model_dir),
                 "--auto-whitening", str(pairs), "--beta", "1"]) == 2
    assert "leave out --beta" in capsys.readouterr().err
    assert main(["index", "build", str(docs), "--data-dir", str(data), "--model", str(tiny_model_dir),
                 "--auto-whitening", str(pairs), "--collection", "tuned"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["tuning"]["pairs"] == pairs.name and "reason" in built["tuning"]
    store = VersionStore(data / "collections" / "tuned")
    assert store.manifest(store.active())["whitening"]["tuned"]["choice"] == built["tuning"]["choice"]


def test_token_command_prints_the_token_alone_and_rotates(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WHITEVEC_ADMIN_TOKEN", raising=False)
    data = tmp_path / "data"
    assert main(["token", "--data-dir", str(data)]) == 2  # a mistyped --data-dir never gets an invented token
    assert "no admin token in" in capsys.readouterr().err and not data.exists()
    data.mkdir()
    AdminToken(None, data).current()  # what a server's first start does
    assert main(["token", "--data-dir", str(data)]) == 0
    first = capsys.readouterr().out
    assert first.count("\n") == 1 and first.strip() == (data / "admin_token").read_text().strip()
    assert main(["token", "--data-dir", str(data)]) == 0 and capsys.readouterr().out == first  # kept, not regenerated
    assert main(["token", "--data-dir", str(data), "--rotate"]) == 0
    out = capsys.readouterr()
    assert out.out != first and out.out.strip() == (data / "admin_token").read_text().strip()
    assert "running server takes it" in out.err
    assert not [p.name for p in data.iterdir() if p.name != "admin_token"]  # no temp file left behind
    monkeypatch.setenv("WHITEVEC_ADMIN_TOKEN", "from-env")
    assert main(["token", "--data-dir", str(data)]) == 0 and capsys.readouterr().out == "from-env\n"
    assert main(["token", "--data-dir", str(data), "--rotate"]) == 2
    assert "change it there" in capsys.readouterr().err


def test_a_busy_port_is_one_line_before_anything_loads(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "whitevec.service.cli.main", "serve", "--port", str(port),
                               "--data-dir", str(tmp_path / "data"), "--model", str(tmp_path / "no-model")],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (f"whitevec: port {port} on 127.0.0.1 is already in use; stop what is using it or choose "
                           f"another: whitevec serve --port {port + 1} (make run PORT={port + 1})\n")
    assert not (tmp_path / "data").exists()  # nothing touched: no data dir, no token
    for args, said in [(["--port", "70000"], "is not a TCP port: give a number from 1 to 65535"),
                       (["--host", "no-such-host.invalid"], "whitevec: cannot listen on no-such-host.invalid: ")]:
        proc = subprocess.run([sys.executable, "-m", "whitevec.service.cli.main", "serve", *args,
                               "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
        assert proc.returncode in (1, 2) and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_restarted_server_keeps_its_token_and_prints_where_it_is(tiny_model_dir, tmp_path, monkeypatch):
    import httpx

    from tests.conftest import ServeProcess

    monkeypatch.delenv("WHITEVEC_ADMIN_TOKEN", raising=False)
    data = tmp_path / "data"
    args, env = ["--model", str(tiny_model_dir), "--data-dir", str(data)], {}
    first = ServeProcess(args, env)
    try:
        token = (data / "admin_token").read_text().strip()
        assert f"admin token (generated, kept in {data / 'admin_token'}): {token}" in first.output()
    finally:
        first.stop()
    again = ServeProcess(args, env)
    try:
        said = again.output()
        assert token not in said and f"admin token: in {data / 'admin_token'}" in said
        assert "searching is open: no access key yet" in said  # the read rule, in the banner
        assert httpx.get(f"{again.base}/admin/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        # the banner's admin curl line works as pasted into a shell (the token command runs inside it)
        line = next(x for x in said.splitlines() if "/admin/jobs" in x and x.strip().startswith("curl"))
        pasted = subprocess.run(["bash", "-c", line.strip() + " -o /dev/null -w '%{http_code}'"], capture_output=True,
                                text=True, timeout=60)
        assert pasted.stdout == "200", (line, pasted.stderr)
        proc = subprocess.run([sys.executable, "-m", "whitevec.service.cli.main", "token", "--data-dir", str(data),
                               "--rotate"], capture_output=True, text=True, timeout=60)
        new = proc.stdout.strip()
        assert proc.returncode == 0 and new != token
        assert httpx.get(f"{again.base}/admin/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert httpx.get(f"{again.base}/admin/jobs", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    finally:
        again.stop()


def test_make_run_takes_port_and_host_and_installs_only_serving_needs():
    import shutil
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[2]
    dry = subprocess.run(["make", "-n", "-W", "pyproject.toml", "run", "PORT=8123", "HOST=0.0.0.0"], cwd=root,
                         capture_output=True, text=True, timeout=60).stdout
    assert "whitevec serve --demo --data-dir data --host 0.0.0.0 --port 8123" in dry
    installs = [line for line in dry.splitlines() if "pip install" in line]
    assert installs and not any("[dev]" in line or "[bench]" in line for line in installs), installs
    # `pip install ./clients` builds in clients/build: ignored, never an untracked folder in a checkout
    assert subprocess.run(["git", "check-ignore", "-q", "clients/build/lib/x.py"], cwd=root).returncode == 0


#: What a command that runs no model must not load: each takes seconds to import.
HEAVY = ("torch", "transformers", "faiss", "onnxruntime", "uvicorn", "sentence_transformers")


def modules_loaded(args: list[str], cwd) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level modules `whitevec ARGS` imported (python -X importtime), and how it ended."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "whitevec.service.cli.main", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**__import__("os").environ, "WHITEVEC_ADMIN_TOKEN": ""})
    found = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", proc.stderr, re.M)
    return {name.split(".")[0] for name in found}, proc


def test_commands_that_run_no_model_load_no_model_code(tmp_path):
    """--help, --version, token, collections, a busy port and a taken data dir answer at once: none of them
    imports torch, transformers, FAISS or ONNX Runtime (the 3-4 s a command used to take to print a line)."""
    import socket

    from whitevec.index.datadir import SERVER, DataDirLock

    data = tmp_path / "data"
    data.mkdir()
    (data / "admin_token").write_text("t0ken-for-the-test\n")
    held = DataDirLock(data)
    held.acquire(*SERVER)  # a server on the data dir
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"id": "a", "text": "x"}\n')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        commands = [["--help"], ["--version"], ["token", "--data-dir", str(data)],
                    ["collections", "list", "--url", "http://127.0.0.1:9", "--data-dir", str(data)],
                    ["serve", "--port", port, "--data-dir", str(data)],
                    ["serve", "--port", str(free_port()), "--data-dir", str(data)],
                    ["index", "build", str(corpus), "--data-dir", str(data)],
                    ["train", str(corpus), "--activate", "--data-dir", str(data)]]
        said = []
        for args in commands:
            loaded, proc = modules_loaded(args, tmp_path)
            assert not loaded & set(HEAVY), (args, loaded & set(HEAVY), proc.stderr[-500:])
            assert "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
            said.append([line for line in (proc.stdout + proc.stderr).splitlines() if not line.startswith("import time")])
    held.release()
    assert said[2] == ["t0ken-for-the-test"] and "no whitevec server answers" in said[3][-1]
    assert "already in use" in said[4][-1] and "send requests to the server already running" in said[5][-1]
    assert "POST /admin/index/rebuild" in said[6][-1] and "POST /admin/train" in said[7][-1]


def test_a_native_crash_prints_the_python_stack():
    """A library that aborts the process (as ONNX Runtime's telemetry thread once did at exit) leaves each
    thread's Python stack on stderr, not a bare "Aborted"."""
    code = ("import os, sys\nfrom whitevec.service.cli.main import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "def crashing_call():\n    os.abort()\ncrashing_call()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -6
    assert "Fatal Python error: Aborted" in done.stderr and "crashing_call" in done.stderr, done.stderr[-2000:]
