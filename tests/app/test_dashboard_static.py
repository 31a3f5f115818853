"""The dashboard's files as the API serves them, and /v1/architectures (no browser: fast).

The browser test (tests/test_dashboard.py) drives the pages; these check what it cannot see
cheaply: content types, headers, that nothing outside app/static is reachable, that the page
refers to no other origin (the browser has no internet), that the lists the page hard-codes
match the engine's registries, and that the stage order comes from the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.routes.dashboard import MEDIA_TYPES, STATIC_DIR, static_files
from tests.app.factories import job_body, uploaded_mnist

FILES = static_files()
# The SVG namespace is an identifier in markup and createElementNS, never fetched.
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}
URL = re.compile(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s"'`)]*""", re.IGNORECASE)


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


def test_the_dashboard_ships_its_page_styles_and_modules() -> None:
    assert {"index.html", "dashboard.css", "js/app.js", "js/api.js", "js/charts.js"} <= set(FILES)


def test_index_is_served_under_ui_with_a_strict_content_security_policy(client: Any) -> None:
    response = client.get("/ui/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="js/app.js"></script>' in response.text


@pytest.mark.parametrize("path", ["/", "/ui"])
def test_the_front_page_and_ui_without_slash_redirect_to_the_dashboard(client: Any, path: str) -> None:
    response = client.get(path, follow_redirects=False)

    assert response.status_code == 307
    assert response.headers["location"] == "/ui/"


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_static_file_is_served_with_its_content_type(client: Any, name: str) -> None:
    response = client.get(f"/ui/{name}")

    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPES[Path(name).suffix]
    assert response.content == (STATIC_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    ["/ui/js/missing.js", "/ui/../main.py", "/ui/%2e%2e/main.py", "/ui/js/..%2f..%2fmain.py", "/ui/js"],
)
def test_nothing_outside_the_static_files_is_served(client: Any, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert "def create_app" not in response.text


def test_the_pages_refer_to_no_other_origin() -> None:
    for name, path in FILES.items():
        text = path.read_text()
        found = set(URL.findall(text)) - ALLOWED_URLS
        assert not found, f"{name} refers to {sorted(found)}: the dashboard must work without internet"
        assert "@import" not in text and "fonts.googleapis" not in text


def test_every_relative_reference_resolves_to_a_served_file() -> None:
    # A typo in an import path breaks the whole page in the browser; catch it here.
    index = FILES["index.html"].read_text()
    references = {
        ref for ref in re.findall(r'(?:src|href)="([^"#]+)"', index) if not ref.startswith(("/", "http"))
    }
    assert references, "index.html loads nothing"
    for ref in references:
        assert ref in FILES, f"index.html refers to {ref}, which is not served"
    for name, path in FILES.items():
        if not name.endswith(".js"):
            continue
        for ref in re.findall(r'(?:from|import)\s*\(?\s*"(\.{1,2}/[^"]+)"', path.read_text()):
            target = (Path(name).parent / ref).as_posix()
            target = str(Path(target)).replace("\\", "/")
            assert target in FILES, f"{name} imports {ref}, which is not served"


def test_the_pruner_and_dataset_lists_of_the_job_form_match_the_engine() -> None:
    from nncompress.pipeline.spec import BUILTIN_DATASETS, DATA_DRIVEN_PRUNERS
    from nncompress.pruners import PRUNERS

    source = FILES["js/view-new.js"].read_text()
    block = source[
        source.index("export const PRUNERS") : source.index("];", source.index("export const PRUNERS"))
    ]
    assert set(re.findall(r'\[\s*"(\w+)",', block)) == set(PRUNERS)
    data_pruners = re.search(r"const DATA_PRUNERS = new Set\(\[([^\]]*)\]\)", source)
    assert data_pruners is not None
    assert set(re.findall(r'"(\w+)"', data_pruners.group(1))) == DATA_DRIVEN_PRUNERS
    datasets = re.search(r"export const DATASETS = \[([^\]]*)\]", source)
    assert datasets is not None
    assert set(re.findall(r'"(\w+)"', datasets.group(1))) == set(BUILTIN_DATASETS)


def test_the_status_filter_of_the_job_list_offers_every_job_status() -> None:
    from core.db.models import JobStatus

    source = FILES["js/view-jobs.js"].read_text()
    statuses = re.search(r"export const STATUSES = \[([^\]]*)\]", source)
    assert statuses is not None
    assert set(re.findall(r'"(\w+)"', statuses.group(1))) == {s.value for s in JobStatus}


def test_a_job_serves_the_engines_stage_list_and_the_scripts_keep_no_copy(client: Any) -> None:
    from nncompress.pipeline import STAGES

    created = client.post("/v1/jobs", json=job_body(uploaded_mnist(client)))
    job = client.get(f"/v1/jobs/{created.json()['id']}").json()

    assert created.json()["stages"] == job["stages"] == list(STAGES)
    assert job["stage"] is None or job["stage"] in job["stages"]
    # A second list in a script drifts: no array literal names more than two stages.
    for name, path in FILES.items():
        if name.endswith(".js"):
            for array in re.findall(r"\[([^\[\]]*)\]", path.read_text()):
                named = set(re.findall(r'"(\w+)"', array)) & set(STAGES)
                assert len(named) <= 2, f"{name} hard-codes the stages {sorted(named)}"


def test_architectures_lists_the_registry_with_input_shapes(client: Any) -> None:
    from nncompress.models import names

    response = client.get("/v1/architectures")

    assert response.status_code == 200
    items = {a["name"]: a for a in response.json()["items"]}
    assert list(items) == names()
    assert items["mnist_net"] == {
        "name": "mnist_net",
        "description": "The seed's MNIST CNN",
        "input_shape": [1, 1, 28, 28],
        "input_dtype": "float32",
        "num_classes": 10,
    }
    assert items["transformer_classifier"]["input_dtype"] == "int64"
