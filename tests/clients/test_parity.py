"""The SDK covers the server's HTTP API: every route (method + path) and every request field has its
counterpart in Client and AsyncClient alike (or in their collection handles), read from the server's own
OpenAPI. A route or field added to the server fails here, naming it, until the SDK takes it (or NOT_IN_SDK
says why it never will)."""

import ast
import inspect
import re
from typing import Any

import pytest

from whitevec_client import AsyncClient, AsyncCollection, Client, Collection, types

#: "Client.x" is sent by Client.x and AsyncClient.x; "Collection.x" by a collection handle's x (both kinds).
TWINS = {"Client": (Client, AsyncClient), "Collection": (Collection, AsyncCollection)}

#: (method, path) → the SDK methods that send it.
ROUTES: dict[tuple[str, str], list[str]] = {
    ("POST", "/embed"): ["Client.embed"],
    ("POST", "/search"): ["Client.search", "Client.search_many"],
    ("POST", "/admin/index/rebuild"): ["Client.rebuild_index"],
    ("POST", "/admin/documents"): ["Client.upsert"],
    ("POST", "/admin/documents/delete"): ["Client.delete"],
    ("GET", "/admin/documents/{doc_id}"): ["Client.get_document"],
    ("GET", "/admin/versions"): ["Client.versions"],
    ("POST", "/admin/versions/{version}/activate"): ["Client.activate"],
    ("POST", "/collections/{name}/embed"): ["Collection.embed"],
    ("POST", "/collections/{name}/search"): ["Collection.search", "Collection.search_many"],
    ("POST", "/admin/collections/{name}/rebuild"): ["Collection.rebuild_index"],
    ("POST", "/admin/collections/{name}/documents"): ["Collection.upsert"],
    ("POST", "/admin/collections/{name}/documents/delete"): ["Collection.delete"],
    ("GET", "/admin/collections/{name}/documents/{doc_id}"): ["Collection.get_document"],
    ("GET", "/admin/collections/{name}/versions"): ["Collection.versions"],
    ("POST", "/admin/collections/{name}/versions/{version}/activate"): ["Collection.activate"],
    ("PUT", "/admin/collections/{name}"): ["Client.create_collection"],
    ("PATCH", "/admin/collections/{name}"): ["Client.set_passages"],
    ("GET", "/admin/collections/{name}"): ["Client.get_collection"],
    ("DELETE", "/admin/collections/{name}"): ["Client.delete_collection"],
    ("GET", "/admin/collections"): ["Client.collections"],
    ("POST", "/admin/keys"): ["Client.create_key"],
    ("GET", "/admin/keys"): ["Client.keys"],
    ("DELETE", "/admin/keys/{key_id}"): ["Client.revoke_key"],
    ("POST", "/admin/train"): ["Client.train"],
    ("GET", "/admin/jobs"): ["Client.jobs"],
    ("GET", "/admin/jobs/{job_id}"): ["Client.job"],
    ("GET", "/admin/jobs/{job_id}/plot.png"): ["Client.job_plot"],
    ("POST", "/admin/jobs/{job_id}/cancel"): ["Client.cancel"],
    ("GET", "/healthz"): ["Client.health"],
    ("GET", "/readyz"): ["Client.ready"],
    ("GET", "/metrics"): ["Client.metrics"],
}

#: Paths (by prefix) deliberately not in the SDK, and why. Besides these, pages outside the API schema
#: (/docs, /openapi.json, /static/swagger, /console) are for browsers and never appear in it.
NOT_IN_SDK = {
    "/v1/": "the OpenAI-compatible surface, used through the `openai` package (tests/clients/test_openai_compat.py)",
}

#: Body fields only one of a route's methods takes (the route's other methods take every other field).
ONLY_IN = {"query": "search", "queries": "search_many"}

#: The SDK's TypedDict for each object schema a request body nests.
SHAPES = {"DocumentIn": types.Document, "ExampleIn": types.Example, "PairIn": types.Pair,
          "WhiteningIn": types.Whitening, "AutoIn": types.AutoWhitening, "IndexIn": types.IndexSpec,
          "RrfFusion": types.RrfFusion, "WeightedFusion": types.WeightedFusion, "Bm25In": types.Bm25,
          "SearchSettingIn": types.SearchSetting, "SearchAutoIn": types.AutoSearch, "SearchTuneIn": types.SearchTuning,
          "PassagesIn": types.Passages}
#: Component schemas that describe JSON values rather than objects with named keys (a filter maps any
#: metadata key to a condition; a metadata value is any JSON value within the value model): a TypedDict
#: cannot say them, and the SDK takes them as plain dicts.
VALUES = {"Filter", "FilterCondition", "FilterScalar", "MetadataValue"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory, tiny_model_dir) -> dict:
    from whitevec.service.http.app import create_app
    from whitevec.service.engine.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("parity") / "data", model_dir=tiny_model_dir,
                        admin_token="parity", device="cpu")
    return create_app(settings).openapi()


def operations(spec: dict) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): op for path, ops in spec["paths"].items() for method, op in ops.items()
            if not any(path.startswith(prefix) for prefix in NOT_IN_SDK)}


def body_schema(spec: dict, op: dict) -> dict:
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    return resolve(spec, schema)


def resolve(spec: dict, schema: dict) -> dict:
    return spec["components"]["schemas"][schema["$ref"].split("/")[-1]] if "$ref" in schema else schema


def refs(schema: Any) -> set[str]:
    """Names of the component schemas a schema refers to, however nested (lists, unions)."""
    if isinstance(schema, dict):
        found = {schema["$ref"].split("/")[-1]} if "$ref" in schema else set()
        return found.union(*(refs(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(refs(v) for v in schema))
    return set()


def methods(name: str) -> list[tuple[type, Any]]:
    kind, attr = name.split(".")
    return [(cls, getattr(cls, attr, None)) for cls in TWINS[kind]]


def test_every_route_has_an_sdk_method(spec):
    served = operations(spec)
    missing = sorted(set(served) - set(ROUTES))
    assert not missing, ("routes with no SDK method (add one to Client/AsyncClient or a collection handle and to "
                         f"ROUTES, or a reason to NOT_IN_SDK): {', '.join(f'{m} {p}' for m, p in missing)}")
    gone = sorted(set(ROUTES) - set(served))
    assert not gone, f"ROUTES lists routes the server no longer has: {gone}"
    for route, names in ROUTES.items():
        for name in names:
            for cls, method in methods(name):
                assert callable(method), f"{' '.join(route)}: {cls.__name__} has no method {name.split('.')[1]}"


def test_every_request_field_and_parameter_has_an_sdk_parameter(spec):
    problems = []
    for route, op in operations(spec).items():
        kind = ROUTES[route][0].split(".")[0]
        wanted = {p["name"]: p["in"] for p in op.get("parameters", []) if not (kind == "Collection" and p["name"] == "name")}
        wanted.update({field: "body" for field in body_schema(spec, op).get("properties", {})})
        for field, where in wanted.items():
            takers = [n for n in ROUTES[route] if ONLY_IN.get(field, n.split(".")[1]) == n.split(".")[1]]
            for name in takers:
                for cls, method in methods(name):
                    if field not in inspect.signature(method).parameters:
                        problems.append(f"{' '.join(route)}: {where} field {field!r} is not a parameter of "
                                        f"{cls.__name__}.{method.__name__}")
    assert not problems, "\n".join(problems)


def test_nested_request_objects_have_typed_dicts(spec):
    """Documents, examples, pairs, whitening and index specs: the TypedDict an IDE completes has the
    server's keys, and the parameter that takes them is annotated with it."""
    problems = []
    for route, op in operations(spec).items():
        body = body_schema(spec, op)
        for name in refs(body):
            if name not in SHAPES and name not in VALUES:
                problems.append(f"{' '.join(route)}: the body nests {name}, which has no TypedDict in SHAPES")
        for field, schema in body.get("properties", {}).items():
            for nested in refs(schema) & set(SHAPES):
                for sdk_name in ROUTES[route]:
                    for cls, method in methods(sdk_name):
                        annotation = str(inspect.signature(method).parameters[field].annotation)
                        if SHAPES[nested].__name__ not in annotation:
                            problems.append(f"{cls.__name__}.{method.__name__}({field}: {annotation}): not typed "
                                            f"with {SHAPES[nested].__name__}")
    for name, typed in SHAPES.items():
        schema = spec["components"]["schemas"][name]
        keys = typed.__required_keys__ | typed.__optional_keys__
        if keys != set(schema["properties"]) or typed.__required_keys__ != set(schema.get("required", [])):
            problems.append(f"{typed.__name__} has keys {sorted(keys)} (required {sorted(typed.__required_keys__)}); "
                            f"the server's {name}: {sorted(schema['properties'])} (required "
                            f"{sorted(schema.get('required', []))})")
        for nested in refs(schema):  # e.g. WhiteningIn.auto is AutoIn
            if nested not in SHAPES and nested not in VALUES:
                problems.append(f"{name} nests {nested}, which has no TypedDict in SHAPES")
    assert not problems, "\n".join(problems)


def test_train_documents_the_server_defaults(spec):
    schema = spec["components"]["schemas"]["TrainRequest"]["properties"]
    documented = {name: ast.literal_eval(value) for name, value in
                  re.findall(r"(\w+) \(default ([^),:]+)[),:]", Client.train.__doc__ or "")}
    defaults = {name: p["default"] for name, p in schema.items() if p.get("default") is not None}
    wrong = {name: f"docstring {documented.get(name)!r}, server {value!r}" for name, value in defaults.items()
             if documented.get(name) != value}
    assert not wrong, f"Client.train's docstring misstates the server's TrainRequest defaults: {wrong}"
    stale = {name: value for name, value in documented.items() if schema.get(name, {}).get("default") != value}
    assert not stale, f"Client.train's docstring gives defaults the server does not have: {stale}"
    assert Client.train.__doc__ == AsyncClient.train.__doc__


def test_twins_match_and_every_public_method_is_documented():
    for sync, async_ in TWINS.values():
        public = {n for n in dir(sync) if not n.startswith("_")}
        assert public == {n for n in dir(async_) if not n.startswith("_")}, (sync.__name__, async_.__name__)
        for name in sorted(public):
            a, b = getattr(sync, name), getattr(async_, name)
            if not callable(a):
                continue
            assert inspect.signature(a).parameters.keys() == inspect.signature(b).parameters.keys(), name
            assert [p.default for p in inspect.signature(a).parameters.values()] == \
                [p.default for p in inspect.signature(b).parameters.values()], name
            assert inspect.iscoroutinefunction(b) or name == "collection", f"{async_.__name__}.{name} is not async"
            for cls, method in ((sync, a), (async_, b)):
                assert (method.__doc__ or "").strip(), f"{cls.__name__}.{name} has no docstring"
