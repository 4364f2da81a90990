"""The Honeycomb board (observability/honeycomb/board.json) and create_board.py.

The board's queries may only name spans and attributes raftd emits (or that Honeycomb
derives from every OpenTelemetry span); the lists below are checked against the source,
so a renamed span breaks this test rather than the board. The script is run with
``urllib.request.urlopen`` replaced: it must never be called in a dry run, and a fake
Honeycomb shows the ids it answers reach the board request.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from observability.honeycomb import create_board
from observability.honeycomb.create_board import (
    DEFAULT_BOARD,
    ENV_API_KEY,
    ENV_API_URL,
    Board,
    load_board,
    main,
)

ROOT = Path(__file__).resolve().parents[2]
SPANS_PY = ROOT / "raftd/runtime/spans.py"
CLIENTS_PY = ROOT / "raftd/runtime/clients.py"
PEERS_PY = ROOT / "raftd/runtime/peers.py"
CHAOS_PY = ROOT / "raftd/runtime/chaos.py"
DRIVER_PY = ROOT / "raftd/runtime/driver.py"

# Span names the members emit, and the files that name them.
SPAN_NAMES = {
    "raft.election": SPANS_PY,
    "raft.append": SPANS_PY,
    "raft.apply": SPANS_PY,
    "raft.commit": SPANS_PY,
    "raft.vote_decision": SPANS_PY,
    "wal.fsync": SPANS_PY,
    "raft.propose": DRIVER_PY,
}
# kv.<op> server spans: clients.py names them f"kv.{op}" from _operation_name.
KV_OPERATIONS = ("set", "get", "cas", "delete", "stale_get")
# Spans named "<prefix><peer>".
SPAN_PREFIXES = {"AppendEntries ": SPANS_PY, "RequestVote ": SPANS_PY}
# Span attributes the members set, and where.
ATTRIBUTES = {
    "raft.election.outcome": SPANS_PY,
    "raft.term": SPANS_PY,
    "raft.peer": SPANS_PY,
    "raftd.outcome": CLIENTS_PY,
    "raftd.error_code": CLIENTS_PY,
    "chaos.dropped": PEERS_PY,
    "chaos.delay_ms": PEERS_PY,
    "chaos.fsync_delay_ms": CHAOS_PY,
    "chaos.fsync_failed": CHAOS_PY,
}
# Columns Honeycomb makes of every OpenTelemetry span (resource attributes included).
HONEYCOMB_COLUMNS = {
    "name",
    "duration_ms",
    "service.name",
    "service.instance.id",
    "status_code",
    "error",
    "span.kind",
    "trace.trace_id",
    "trace.parent_id",
}
REQUIRED_QUERIES = {
    "Elections by outcome",
    "Write latency P99 by member",
    "AppendEntries duration heatmap",
    "Chaos: dropped and delayed messages",
    "fsync duration",
    "Client requests by outcome",
}

CALCULATION_OPS = [
    "COUNT",
    "CONCURRENCY",
    "SUM",
    "AVG",
    "COUNT_DISTINCT",
    "MAX",
    "MIN",
    "HEATMAP",
    "RATE_AVG",
    "RATE_SUM",
    "RATE_MAX",
    *("P001", "P01", "P05", "P10", "P20", "P25", "P50"),
    *("P75", "P80", "P90", "P95", "P99", "P999"),
]
NO_VALUE_FILTER_OPS = ["exists", "does-not-exist"]
LIST_FILTER_OPS = ["in", "not-in"]
FILTER_OPS = [
    "=",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "starts-with",
    "does-not-start-with",
    "ends-with",
    "does-not-end-with",
    "contains",
    "does-not-contain",
]
# Honeycomb's query specification, the parts board.json may use.
QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["calculations", "time_range"],
    "properties": {
        "time_range": {"type": "integer", "minimum": 60},
        "granularity": {"type": "integer", "minimum": 0},
        "calculations": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["op"],
                "properties": {
                    "op": {"enum": CALCULATION_OPS},
                    "column": {"type": "string", "minLength": 1},
                },
                "if": {"properties": {"op": {"const": "COUNT"}}},
                "then": {"not": {"required": ["column"]}},
                "else": {"required": ["column"]},
            },
        },
        "filters": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["column", "op"],
                "properties": {
                    "column": {"type": "string", "minLength": 1},
                    "op": {"enum": FILTER_OPS + NO_VALUE_FILTER_OPS + LIST_FILTER_OPS},
                    "value": {},
                },
                "allOf": [
                    {
                        "if": {"properties": {"op": {"enum": NO_VALUE_FILTER_OPS}}},
                        "then": {"not": {"required": ["value"]}},
                    },
                    {
                        "if": {"properties": {"op": {"enum": LIST_FILTER_OPS}}},
                        "then": {
                            "required": ["value"],
                            "properties": {"value": {"type": "array", "minItems": 1}},
                        },
                    },
                    {
                        "if": {"properties": {"op": {"enum": FILTER_OPS}}},
                        "then": {
                            "required": ["value"],
                            "properties": {"value": {"type": ["string", "number", "boolean"]}},
                        },
                    },
                ],
            },
        },
        "filter_combination": {"enum": ["AND", "OR"]},
        "breakdowns": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "orders": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "op": {"enum": CALCULATION_OPS},
                    "column": {"type": "string"},
                    "order": {"enum": ["ascending", "descending"]},
                },
            },
        },
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
}
BOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "queries"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": {"type": "string", "maxLength": 1024},
        "queries": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "query"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 320},
                    "description": {"type": "string", "maxLength": 1023},
                    "style": {"enum": ["graph", "table", "combo"]},
                    "query": QUERY_SCHEMA,
                },
            },
        },
    },
}


def raw_board() -> dict[str, Any]:
    raw = json.loads(DEFAULT_BOARD.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


def board() -> Board:
    return load_board(DEFAULT_BOARD)


def columns_of(query: dict[str, Any]) -> set[str]:
    used = {c["column"] for c in query.get("calculations", []) if "column" in c}
    used |= {f["column"] for f in query.get("filters", [])}
    used |= set(query.get("breakdowns", []))
    used |= {o["column"] for o in query.get("orders", []) if "column" in o}
    return used


# ------------------------------------------------------------------ the names are real


def test_the_lists_of_names_match_the_source() -> None:
    for name, path in {**SPAN_NAMES, **ATTRIBUTES}.items():
        assert f'"{name}"' in path.read_text(encoding="utf-8"), f"{path.name} has no {name!r}"
    for prefix, path in SPAN_PREFIXES.items():
        assert f'f"{prefix}{{' in path.read_text(encoding="utf-8"), prefix
    clients = CLIENTS_PY.read_text(encoding="utf-8")
    assert 'f"kv.{op}"' in clients
    for operation in KV_OPERATIONS:
        assert f'"{operation}"' in clients, operation


def span_names() -> set[str]:
    return set(SPAN_NAMES) | {f"kv.{op}" for op in KV_OPERATIONS}


# ------------------------------------------------------------------ board.json


def test_board_file_is_valid() -> None:
    Draft202012Validator.check_schema(BOARD_SCHEMA)
    errors = [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in Draft202012Validator(BOARD_SCHEMA).iter_errors(raw_board())
    ]
    assert errors == []
    parsed = board()
    names = [query.name for query in parsed.queries]
    assert len(names) == len(set(names)), "query names are unique"
    assert set(names) >= REQUIRED_QUERIES


def test_the_schema_has_teeth() -> None:
    raw = raw_board()
    raw["queries"][0]["query"]["calculations"] = [{"op": "P99"}]  # no column
    raw["queries"][1]["query"]["filters"] = [{"column": "name", "op": "in", "value": "kv.set"}]
    raw["queries"][2]["query"]["breakdown"] = ["raft.peer"]  # misspelt
    errors = list(Draft202012Validator(BOARD_SCHEMA).iter_errors(raw))
    assert len(errors) == 3, [e.message for e in errors]


def test_queries_use_only_columns_raftd_spans_have() -> None:
    allowed = HONEYCOMB_COLUMNS | set(ATTRIBUTES)
    for query in board().queries:
        unknown = columns_of(query.query) - allowed
        assert not unknown, f"{query.name}: no span has {sorted(unknown)}"


def test_span_name_filters_name_real_spans() -> None:
    known = span_names()
    for query in board().queries:
        for where in query.query.get("filters", []):
            if where["column"] != "name":
                continue
            if where["op"] == "=":
                assert where["value"] in known, f"{query.name}: {where}"
            elif where["op"] == "in":
                assert set(where["value"]) <= known, f"{query.name}: {where}"
            elif where["op"] == "starts-with":
                prefix = where["value"]
                assert any(p.startswith(prefix) for p in SPAN_PREFIXES) or any(
                    name.startswith(prefix) for name in known
                ), f"{query.name}: {where}"
            else:
                pytest.fail(f"{query.name}: unexpected filter on name: {where}")


def test_the_board_covers_what_the_cluster_is_watched_for() -> None:
    by_name = {query.name: query.query for query in board().queries}
    elections = by_name["Elections by outcome"]
    assert {"column": "name", "op": "=", "value": "raft.election"} in elections["filters"]
    assert elections["breakdowns"] == ["raft.election.outcome"]
    write = by_name["Write latency P99 by member"]
    assert {"op": "P99", "column": "duration_ms"} in write["calculations"]
    assert "service.instance.id" in write["breakdowns"]
    heatmap = by_name["AppendEntries duration heatmap"]
    assert {"op": "HEATMAP", "column": "duration_ms"} in heatmap["calculations"]
    chaos = by_name["Chaos: dropped and delayed messages"]
    assert {"chaos.dropped", "chaos.delay_ms"} <= columns_of(chaos)
    assert chaos["filter_combination"] == "OR"
    assert {"column": "name", "op": "=", "value": "wal.fsync"} in by_name["fsync duration"][
        "filters"
    ]
    assert "raftd.outcome" in by_name["Client requests by outcome"]["breakdowns"]


# ------------------------------------------------------------------ create_board.py


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    calls: list[object] = []

    def refuse(*args: object, **kwargs: object) -> object:
        calls.append(args)
        raise AssertionError("create_board opened a connection")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    yield calls
    assert calls == []


def run(argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, environ=environ, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def printed_requests(output: str) -> list[tuple[str, str, dict[str, str], Any]]:
    """(method, URL, headers, JSON body) of each request a dry run printed."""
    requests = []
    for chunk in re.split(r"^(?=POST )", output, flags=re.M)[1:]:
        head, _, rest = chunk.partition("\n\n")
        first, *header_lines = head.splitlines()
        method, url = first.split(" ", 1)
        headers = dict(line.split(": ", 1) for line in header_lines)
        body, _ = json.JSONDecoder().raw_decode(rest)
        requests.append((method, url, headers, body))
    return requests


def test_dry_run_prints_every_request_and_sends_nothing(no_network: list[object]) -> None:
    key = "0123456789abcdef0123456789abcdef"
    code, out, err = run(["--dry-run"], {ENV_API_KEY: key})
    assert (code, err) == (0, "")
    assert key not in out
    queries = board().queries
    requests = printed_requests(out)
    assert len(requests) == 2 * len(queries) + 1
    for i, query in enumerate(queries):
        (m1, url1, h1, body1), (m2, url2, _, body2) = requests[2 * i : 2 * i + 2]
        assert (m1, url1) == ("POST", "https://api.honeycomb.io/1/queries/raftd")
        assert body1 == query.query
        assert h1["X-Honeycomb-Team"] == "<redacted, 32 characters>"
        assert h1["Content-Type"] == "application/json"
        assert (m2, url2) == ("POST", "https://api.honeycomb.io/1/query_annotations/raftd")
        assert body2["name"] == query.name and body2["description"] == query.description
    method, url, _, body = requests[-1]
    assert (method, url) == ("POST", "https://api.honeycomb.io/1/boards")
    assert body["type"] == "flexible"
    assert len(body["panels"]) == len(queries)
    assert "none sent" in out


def test_dry_run_needs_no_key(no_network: list[object]) -> None:
    code, out, _ = run(["--dry-run", "--dataset", "my data"], {})
    assert code == 0
    assert f"<{ENV_API_KEY} is not set>" in out
    assert "POST https://api.honeycomb.io/1/queries/my%20data\n" in out


def test_eu_api_url_is_honoured(no_network: list[object]) -> None:
    code, out, _ = run(["--dry-run"], {ENV_API_URL: "https://api.eu1.honeycomb.io/"})
    assert code == 0
    urls = {url for _, url, _, _ in printed_requests(out)}
    assert urls and all(u.startswith("https://api.eu1.honeycomb.io/1/") for u in urls)


def test_missing_key_exits_2(no_network: list[object]) -> None:
    code, out, err = run([], {})
    assert code == 2
    assert out == ""
    assert ENV_API_KEY in err and "--dry-run" in err


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--board", "/nonexistent/board.json"], {ENV_API_KEY: "k"}, "board.json"),
        (["--dataset", " "], {ENV_API_KEY: "k"}, "--dataset"),
        ([], {ENV_API_KEY: "k", ENV_API_URL: "api.honeycomb.io"}, ENV_API_URL),
    ],
)
def test_usage_errors_exit_2(
    no_network: list[object], argv: list[str], environ: dict[str, str], message: str
) -> None:
    code, _, err = run(argv, environ)
    assert code == 2
    assert message in err


class FakeResponse:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = json.dumps(body).encode()

    def read(self) -> bytes:
        return self.body

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FakeHoneycomb:
    """Answers like the API: each created query and annotation gets a fresh id."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    def __call__(self, request: urllib.request.Request, timeout: float = 0) -> FakeResponse:
        assert timeout > 0, "every request has a timeout"
        assert isinstance(request.data, bytes)
        headers = {name.lower(): value for name, value in request.header_items()}
        body = json.loads(request.data)
        self.requests.append((request.get_method(), request.full_url, headers, body))
        path = request.full_url.removeprefix("https://api.honeycomb.io")
        n = len(self.requests)
        if path.startswith("/1/queries/"):
            return FakeResponse({"id": f"query-{n}", **body})
        if path.startswith("/1/query_annotations/"):
            return FakeResponse({"id": f"annotation-{n}", **body})
        if path == "/1/boards":
            url = "https://ui.honeycomb.io/team/board/b1"
            return FakeResponse({"id": "b1", "links": {"board_url": url}, **body})
        raise AssertionError(f"unexpected request {request.full_url}")


def test_board_request_contains_the_ids_honeycomb_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeHoneycomb()
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    code, out, err = run(["--dataset", "raftd"], {ENV_API_KEY: "the-key"})
    assert (code, err) == (0, "")
    assert "https://ui.honeycomb.io/team/board/b1" in out

    queries = board().queries
    assert len(fake.requests) == 2 * len(queries) + 1
    for method, _, headers, _ in fake.requests:
        assert method == "POST"
        assert headers["x-honeycomb-team"] == "the-key"
        assert headers["content-type"] == "application/json"
    expected_panels = []
    for i, query in enumerate(queries):
        _, url1, _, body1 = fake.requests[2 * i]
        _, url2, _, body2 = fake.requests[2 * i + 1]
        assert url1 == "https://api.honeycomb.io/1/queries/raftd" and body1 == query.query
        assert url2 == "https://api.honeycomb.io/1/query_annotations/raftd"
        assert body2 == {
            "name": query.name,
            "description": query.description,
            "query_id": f"query-{2 * i + 1}",
        }
        expected_panels.append(
            {
                "type": "query",
                "query_panel": {
                    "query_id": f"query-{2 * i + 1}",
                    "query_annotation_id": f"annotation-{2 * i + 2}",
                    "query_style": query.style,
                },
            }
        )
    _, url, _, body = fake.requests[-1]
    assert url == "https://api.honeycomb.io/1/boards"
    assert body["name"] == board().name
    assert body["type"] == "flexible"
    assert body["panels"] == expected_panels


def test_a_refused_request_exits_1_with_honeycombs_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unauthorized(request: urllib.request.Request, timeout: float = 0) -> FakeResponse:
        raise urllib.error.HTTPError(
            request.full_url, 401, "Unauthorized", Message(), io.BytesIO(b'{"error":"bad key"}')
        )

    monkeypatch.setattr(urllib.request, "urlopen", unauthorized)
    code, _, err = run([], {ENV_API_KEY: "wrong"})
    assert code == 1
    assert "HTTP 401" in err and "bad key" in err
    assert "wrong" not in err


def test_an_answer_without_an_id_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout=0: FakeResponse({}))
    code, _, err = run([], {ENV_API_KEY: "k"})
    assert code == 1
    assert "no id" in err


def test_runs_as_a_module_without_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HONEYCOMB_")}
    dry = subprocess.run(
        [sys.executable, "-m", "observability.honeycomb.create_board", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    assert len(printed_requests(dry.stdout)) == 2 * len(board().queries) + 1
    refused = subprocess.run(
        [sys.executable, "-m", "observability.honeycomb.create_board"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert ENV_API_KEY in refused.stderr


def test_module_is_importable_as_documented() -> None:
    assert create_board.DEFAULT_DATASET == "raftd"
    assert create_board.DEFAULT_API_URL == "https://api.honeycomb.io"
