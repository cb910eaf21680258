"""The official `openai` package against /v1/embeddings and /v1/models on a real server."""

import numpy as np
import openai
import pytest

from tests.conftest import ServeProcess, demo_documents
from whitevec_client import Client

ADMIN, KEY = "oa-admin", "oa-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    proc = ServeProcess(["--model", str(tiny_model_dir)], {
        "WHITEVEC_DATA_DIR": str(tmp_path_factory.mktemp("oa")), "WHITEVEC_ADMIN_TOKEN": ADMIN,
        "WHITEVEC_API_KEY": KEY, "WHITEVEC_DEVICE": "cpu"})
    with Client(proc.base, api_key=KEY, admin_token=ADMIN) as wv:
        wv.wait(wv.rebuild_index(documents=demo_documents(), whitening={"dim": 8}), progress=False)
    yield proc.base
    proc.stop()


@pytest.fixture
def oa(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def model_name(oa) -> str:
    models = oa.models.list().data
    assert [m.id for m in models][1:] == ["whitevec", "default"] and {m.owned_by for m in models} == {"whitevec"}
    return models[0].id  # the served model's own name; "whitevec" is the alias that survives model changes


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
@pytest.mark.slow
def test_embeddings_match_embed(oa, server, encoding_format):
    texts = ["the cat sat on the mat", "今天天气不错"]
    resp = oa.embeddings.create(model=model_name(oa), input=texts, encoding_format=encoding_format)
    assert resp.object == "list" and [d.index for d in resp.data] == [0, 1]
    assert resp.usage.prompt_tokens == resp.usage.total_tokens > 4
    with Client(server, api_key=KEY) as wv:
        want = wv.embed(texts)
    got = [d.embedding for d in resp.data]
    if encoding_format == "base64":  # the openai package leaves base64 strings to the caller
        import base64
        got = [np.frombuffer(base64.b64decode(e), dtype="<f4") for e in got]
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), want, atol=1e-5)


def test_default_encoding_and_single_string_input(oa):
    resp = oa.embeddings.create(model="whitevec", input="hello world")
    assert len(resp.data) == 1 and len(resp.data[0].embedding) == 8


def test_dimensions(oa):
    resp = oa.embeddings.create(model="whitevec", input=["hello"], dimensions=4, encoding_format="float")
    assert len(resp.data[0].embedding) == 4
    with pytest.raises(openai.BadRequestError) as err:
        oa.embeddings.create(model="whitevec", input=["hello"], dimensions=64)
    assert err.value.status_code == 400
    assert err.value.body["param"] == "dimensions" and "above the 8 dims" in err.value.body["message"]
    assert err.value.body["message"].startswith("dimensions 64 is above")  # the field as /v1 names it, not `dim`


def test_errors_in_openai_shape(oa, server):
    with pytest.raises(openai.NotFoundError, match='use "whitevec" \(the default collection.s model.*GET /v1/models'):
        oa.embeddings.create(model="text-embedding-3-small", input=["x"])
    with pytest.raises(openai.BadRequestError) as err:
        oa.embeddings.create(model="whitevec", input=[""])
    assert err.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="whitevec", input=["x"])
