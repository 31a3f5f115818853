"""`nncompress keys list`: the key table, printed with the CLI's one table renderer."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from app.cli.keys import keys_list, keys_revoke


def test_keys_list_prints_one_aligned_row_per_key_with_its_state(
    make_settings: Callable[..., Any], make_api_key: Callable[..., str]
) -> None:
    settings = make_settings()
    alice = make_api_key(settings, "alice")
    make_api_key(settings, "bob")
    assert keys_revoke(alice.split("_")[1], settings=settings, out=io.StringIO()) == 0
    out = io.StringIO()

    assert keys_list(settings=settings, out=out) == 0

    header, rule, *rows = out.getvalue().splitlines()
    columns = ("KEY ID", "PREFIX", "TENANT", "CREATED", "LAST USED", "STATE")
    starts = [header.index(name) for name in columns]
    assert set(rule) == {"-", " "} and len(rows) == 2
    by_tenant = {row[starts[2] : starts[3]].strip(): row for row in rows}
    assert set(by_tenant) == {"alice", "bob"}
    assert by_tenant["alice"][starts[1] :].startswith(alice.split("_")[1])
    assert by_tenant["alice"][starts[5] :].startswith("revoked ")
    assert by_tenant["bob"][starts[5] :] == "active"
    assert by_tenant["bob"][starts[4] : starts[5]].strip() == "-"  # never used


def test_keys_list_filters_by_tenant(
    make_settings: Callable[..., Any], make_api_key: Callable[..., str]
) -> None:
    settings = make_settings()
    make_api_key(settings, "alice")
    make_api_key(settings, "bob")
    out = io.StringIO()

    assert keys_list(tenant="bob", settings=settings, out=out) == 0

    rows = out.getvalue().splitlines()[2:]
    assert len(rows) == 1 and " bob " in rows[0]
