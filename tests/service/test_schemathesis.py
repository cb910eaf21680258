"""schemathesis against a live server (real uvicorn on loopback, tiny model, a built index, admin token) with
every check: no server error, answers as the OpenAPI document declares them, schema-invalid bodies refused.

A schema-valid body may still be refused where the rule is about the data, not its shape, which JSON Schema
cannot state; each such refusal is named below, and must be a 4xx naming what to fix."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServeProcess, demo_documents

pytestmark = pytest.mark.slow

ADMIN = "st-admin"
#: Refusals of schema-valid bodies, each a rule about the data: (what the answer says, why no schema says it).
DATA_RULES = [
    ("duplicate document ids", "ids unique within a batch: JSON Schema's uniqueItems compares whole items"),
    ("training needs at least 2 classes", "paraphrase classes are found by scoring the pairs"),
    ("is above the model's", "the model's dimensions are known once it is loaded"),
    ("dims this version's whitening serves", "the served version's dimensions change with each rebuild"),
    ("(the model's max length", "a passage must fit the collection's model, known once it is loaded"),
    ("fewer than a passage's own tokens", "overlap is bounded by max_tokens, another field of the object"),
    ("has no character the model reads", "the tokenizer drops Unicode's control and format categories, which a "
     "portable JSON Schema pattern cannot name"),
]


def test_schemathesis_finds_no_server_error_and_no_nonconformance(tmp_path, tiny_model_dir):
    proc = ServeProcess(["--model", str(tiny_model_dir)], {
        "WHITEVEC_DATA_DIR": str(tmp_path / "data"), "WHITEVEC_ADMIN_TOKEN": ADMIN, "WHITEVEC_DEVICE": "cpu"})
    try:
        headers = {"authorization": f"Bearer {ADMIN}"}
        job = httpx.post(f"{proc.base}/admin/index/rebuild", headers=headers, timeout=60,
                         json={"documents": demo_documents(), "whitening": {"beta": 1, "gamma": 1, "dim": 8}}).json()
        for _ in range(600):
            if httpx.get(f"{proc.base}/admin/jobs/{job['job_id']}", headers=headers).json()["state"] == "succeeded":
                break
            __import__("time").sleep(0.1)
        report = tmp_path / "junit.xml"
        run = subprocess.run(
            [str(Path(sys.executable).parent / "st"), "run", f"{proc.base}/openapi.json", "--checks", "all",
             "--max-examples", "8", "--seed", "7", "--phases", "examples,coverage,fuzzing", "-H",
             f"Authorization: Bearer {ADMIN}", "--report", "junit", "--report-junit-path", str(report),
             "--no-color", "--warnings", "off"], capture_output=True, text=True, timeout=1500)
        cases = ET.parse(report).getroot()
        failures = [(case.get("name"), f.get("message", "") + (f.text or ""))
                    for case in cases.iter("testcase") for f in case.iter("failure")]
        unexplained = [(name, text) for name, text in failures
                       if "Schema-valid request rejected" not in text or not any(rule in text for rule, _ in DATA_RULES)]
        assert not unexplained, run.stdout[-6000:]
        assert "Server error" not in run.stdout and "Internal Server Error" not in proc.output(None)
        tested = sum(1 for _ in cases.iter("testcase"))
        assert tested >= 30, run.stdout[-3000:]  # every operation was reached
        print(run.stdout[-1500:])
    finally:
        proc.stop()
