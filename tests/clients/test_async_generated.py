"""The asyncio SDK is generated from the blocking one (clients/make_async.py): the committed file is exactly
what the generator makes, and the generator's rules do what they say on a planted method."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "clients" / "make_async.py"


@pytest.fixture(scope="module")
def make_async():
    spec = importlib.util.spec_from_file_location("make_async", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_async_client_is_what_the_blocking_one_makes(make_async):
    made = make_async.generate(make_async.SOURCE.read_text(encoding="utf-8"))
    assert make_async.TARGET.read_text(encoding="utf-8") == made, "run: python clients/make_async.py"
    assert make_async.main(["--check"]) == 0


def test_a_new_blocking_method_comes_out_awaited(make_async):
    source = make_async.SOURCE.read_text(encoding="utf-8").replace(
        "    def versions(self) -> VersionList:",
        "    def newest(self, n: int,\n"
        "               k: int = 1) -> str:\n"
        "        self._limits()\n"
        "        time.sleep(0.1)\n"
        "        return self._run(calls.versions(self._routes))[\"active\"] + str(self.versions())\n\n"
        "    def versions(self) -> VersionList:", 1)
    made = make_async.generate(source)
    assert ("    async def newest(self, n: int,\n"
            "                     k: int = 1) -> str:\n"  # the continuation moves with `async `
            "        await self._limits()\n"
            "        await asyncio.sleep(0.1)\n"
            "        return (await self._run(calls.versions(self._routes)))[\"active\"] + str(await self.versions())\n"
            ) in made
    namespace: dict = {"__name__": "whitevec_client._planted", "__package__": "whitevec_client"}
    exec(compile(made, "_async.py", "exec"), namespace)  # the planted twin is valid Python that imports
    assert "AsyncClient" in namespace and "Client" not in namespace


def test_a_source_the_rules_no_longer_fit_is_refused(make_async):
    source = make_async.SOURCE.read_text(encoding="utf-8").replace("(`with Client(...)` does it)", "(closes it)")
    with pytest.raises(make_async.Mismatch, match="PROSE"):
        make_async.generate(source)
