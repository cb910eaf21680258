"""docker-compose.yml (no Docker engine here): every whitevec service's healthcheck asks /readyz — /healthz
only says the process answers — and the command, run as written against a live server, passes when it is
ready and fails when it answers 503 or not at all."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.conftest import ServeProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


def whitevec_healthchecks() -> dict[str, list[str]]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return {name: s["healthcheck"]["test"] for name, s in services.items()
            if str(s.get("image", "")).startswith("whitevec")}


def test_every_whitevec_service_is_healthy_only_when_ready(tmp_path, tiny_model_dir):
    checks = whitevec_healthchecks()
    assert {"whitevec", "whitevec-gpu", "whitevec-a", "whitevec-b"} <= set(checks)
    for name, test in checks.items():
        assert test[:3] == ["CMD", "python", "-c"] and "/readyz" in test[3], name

    def healthy(port: int) -> bool:
        code = re.sub(r"http://127\.0\.0\.1:8000", f"http://127.0.0.1:{port}", checks["whitevec"][3])
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode == 0

    proc = ServeProcess(["--model", str(tiny_model_dir)], {"WHITEVEC_DATA_DIR": str(tmp_path / "data")})
    try:
        assert healthy(proc.port)
    finally:
        proc.stop()
    assert not healthy(free_port())  # nothing listening

    class NotReady(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(503 if self.path == "/readyz" else 200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    loading = ThreadingHTTPServer(("127.0.0.1", 0), NotReady)
    threading.Thread(target=loading.serve_forever, daemon=True).start()
    try:
        assert not healthy(loading.server_address[1])  # /healthz would say 200 here
    finally:
        loading.shutdown()
