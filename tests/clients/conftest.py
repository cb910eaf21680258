"""One real `whitevec serve` on loopback for the SDK's tests (tiny model, a built index)."""

import pytest

from tests.conftest import ServeProcess, demo_documents
from whitevec_client import Client

ADMIN, KEY = "sdk-admin", "sdk-key"
DOCS = demo_documents()


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_model_dir):
    """Its base URL; WHITEVEC_MAX_TEXTS=4, so a handful of texts already takes several requests."""
    data = tmp_path_factory.mktemp("sdk-data")
    proc = ServeProcess(["--model", str(tiny_model_dir)], {
        "WHITEVEC_DATA_DIR": str(data), "WHITEVEC_ADMIN_TOKEN": ADMIN, "WHITEVEC_API_KEY": KEY,
        "WHITEVEC_MAX_TEXTS": "4", "WHITEVEC_DEVICE": "cpu"})
    with Client(proc.base, api_key=KEY, admin_token=ADMIN) as wv:
        job = wv.wait(wv.rebuild_index(documents=DOCS, whitening={"beta": 1, "gamma": 1, "dim": 8}), progress=False)
        assert job.state == "succeeded"
    yield proc.base
    proc.stop()


@pytest.fixture
def wv(server):
    with Client(server, api_key=KEY, admin_token=ADMIN) as client:
        yield client
