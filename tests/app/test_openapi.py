"""The OpenAPI document tells the truth, and its pages work without a network.

- every operation lists its problem answers as application/problem+json with the ``type``\\ s it
  can return, and no answer FastAPI would document but never send;
- the job's finetune/schedule/quantize/options are typed (the engine's own spec models), and its
  ``stages`` show the engine's stage list;
- cursors are opaque strings with a pattern, and any string matching it is accepted;
- /docs and /redoc reference only same-origin URLs, and each of those answers 200 with its type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from app.problems import PROBLEM_MEDIA_TYPE, TYPE_PREFIX
from tests.app.factories import job_body, uploaded_mnist

OPERATIONS_WITH_IDS = ("{job_id}", "{model_id}", "{dataset_id}")


@pytest.fixture
def client(make_client: Callable[..., Any]) -> TestClient:
    return make_client()  # type: ignore[no-any-return]


@pytest.fixture
def schema(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in schema["paths"].items() for m, op in ops.items()]


def _problem_types(response: dict[str, Any]) -> set[str]:
    schema = response["content"][PROBLEM_MEDIA_TYPE]["schema"]
    assert schema["allOf"][0] == {"$ref": "#/components/schemas/ProblemDetails"}
    types = schema["allOf"][1]["properties"]["type"]
    options = types.get("anyOf", [types])
    return {t for option in options for t in option.get("enum", [option.get("pattern")])}


def test_every_error_answer_is_a_problem_document_with_its_types(schema: dict[str, Any]) -> None:
    assert schema["components"]["schemas"]["ProblemDetails"]["required"] == [
        "type",
        "title",
        "status",
        "detail",
        "instance",
    ]
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # FastAPI's, never sent
    for method, path, operation in _operations(schema):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            assert list(response["content"]) == [PROBLEM_MEDIA_TYPE], (method, path, status)
            assert _problem_types(response), (method, path, status)
        statuses = set(operation["responses"])
        if path.startswith("/v1/"):
            assert {"401", "429"} <= statuses, (method, path)
            assert operation["security"] == [{"apiKey": []}]
            assert not any(p["name"].lower() == "authorization" for p in operation.get("parameters", []))
        if operation.get("parameters") or operation.get("requestBody"):
            assert TYPE_PREFIX + "validation_error" in _problem_types(operation["responses"]["422"])
        if any(name in path for name in OPERATIONS_WITH_IDS):
            assert TYPE_PREFIX + "not_found" in _problem_types(operation["responses"]["404"]), path


def test_job_submission_lists_the_problems_it_raises(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/v1/jobs"]["post"]["responses"]
    expected = {
        "404": {"not_found"},
        "409": {"idempotency_conflict"},
        "422": {
            "invalid_job_spec",
            "invalid_config",
            "unknown_layer",
            "invalid_quant_config",
            "invalid_dataset",
        },
        "429": {"too_many_jobs", "rate_limited"},
        "413": {"request_too_large"},
    }
    for status, codes in expected.items():
        assert {TYPE_PREFIX + c for c in codes} <= _problem_types(responses[status]), status


def test_the_answers_match_what_the_document_says(client: TestClient, schema: dict[str, Any]) -> None:
    model_id = uploaded_mnist(client)
    answers = [
        ("post", "/v1/jobs", client.post("/v1/jobs", json=job_body("f" * 32))),
        ("post", "/v1/jobs", client.post("/v1/jobs", json=job_body(model_id, config_list=[{"sparsity": 2}]))),
        ("post", "/v1/jobs", client.post("/v1/jobs", json=job_body(model_id, finetune={"epochs": 0}))),
        ("get", "/v1/jobs/{job_id}", client.get("/v1/jobs/" + "0" * 32)),
        ("get", "/v1/jobs", client.get("/v1/jobs", params={"limit": 0})),
    ]
    for method, path, response in answers:
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
        documented = schema["paths"][path][method]["responses"][str(response.status_code)]
        assert response.json()["type"] in _problem_types(documented), (path, response.text)


def test_job_options_are_typed_by_the_engine_specs(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    job = schemas["JobIn"]["properties"]

    def target(prop: dict[str, Any]) -> str:
        refs = [o["$ref"] for o in prop.get("anyOf", [prop]) if "$ref" in o]
        assert len(refs) == 1, prop
        return str(refs[0].rsplit("/", 1)[1])

    assert [target(job[k]) for k in ("finetune", "schedule", "quantize", "options")] == [
        "FinetuneSpec",
        "ScheduleSpec",
        "QuantSpec",
        "JobOptions",
    ]
    finetune = schemas["FinetuneSpec"]
    assert finetune["additionalProperties"] is False
    assert finetune["properties"]["epochs"]["minimum"] == 1
    assert finetune["properties"]["optimizer"]["enum"] == ["sgd", "adam", "adamw"]
    assert schemas["ScheduleSpec"]["properties"]["kind"]["enum"] == ["linear", "agp"]
    assert schemas["QuantSpec"]["properties"]["mode"]["enum"] == ["static", "dynamic", "qat"]
    assert schemas["JobOptions"]["properties"]["latency_runs"]["minimum"] == 1


def test_a_job_documents_the_engines_stage_list(schema: dict[str, Any]) -> None:
    from nncompress.pipeline import STAGES

    stages = schema["components"]["schemas"]["JobOut"]["properties"]["stages"]

    assert stages["type"] == "array" and stages["items"] == {"type": "string"}
    assert stages["examples"] == [list(STAGES)] and "order" in stages["description"]


def test_cursors_are_opaque_strings_with_a_pattern_and_any_match_is_accepted(
    client: TestClient, schema: dict[str, Any]
) -> None:
    for path in ("/v1/jobs", "/v1/datasets"):
        (cursor,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "cursor"]
        assert cursor["schema"]["type"] == "string" and not cursor["required"]  # left out, never null
        pattern = cursor["schema"]["pattern"]
        for value in ("0." + "0" * 32, "ffffffffffffff." + "f" * 32):
            assert re.fullmatch(pattern.strip("^$"), value)
            assert client.get(path, params={"cursor": value}).status_code == 200, value
        bad = client.get(path, params={"cursor": "not-a-cursor"})
        assert (bad.status_code, bad.json()["type"]) == (422, TYPE_PREFIX + "validation_error")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]
        self._in_script = tag == "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"text/javascript", "text/css"}),
        ("/redoc", {"text/javascript"}),
    ],
)
def test_docs_pages_load_from_this_server_only(client: TestClient, page: str, assets: set[str]) -> None:
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    parser = _Links()
    parser.feed(response.text)
    # Inline scripts name the spec (Swagger UI's url: '/openapi.json'); take their quoted paths too.
    urls = parser.urls + [u for s in parser.scripts for u in re.findall(r"""url:\s*['"]([^'"]+)['"]""", s)]
    assert urls, response.text
    assert not re.search(r"https?://|//[a-z]", response.text, re.IGNORECASE), "a URL to another origin"
    if page == "/docs":
        assert '"validatorUrl": null' in response.text  # no badge fetched from the public validator
    kinds = set()
    for url in urls:
        assert not urlsplit(url).scheme and not urlsplit(url).netloc, url
        asset = client.get(url)
        assert asset.status_code == 200, url
        kind = asset.headers["content-type"].split(";")[0]
        expected = {".js": "text/javascript", ".css": "text/css", ".json": "application/json"}
        suffix = "." + url.rsplit(".", 1)[-1]
        assert kind == expected.get(suffix, kind), (url, kind)
        kinds.add(kind)
    assert assets <= kinds
    assert "application/json" in kinds  # the OpenAPI document itself


def test_unknown_docs_asset_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/docs/assets/../../etc/passwd")
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM_MEDIA_TYPE
