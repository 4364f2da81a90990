"""Create raftd's Honeycomb board from board.json.

    python -m observability.honeycomb.create_board [--dataset raftd] [--board PATH] [--dry-run]

For each query in the board file, three requests to the Honeycomb API (v1):

1. ``POST /1/queries/<dataset>`` with the query specification, which answers its id;
2. ``POST /1/query_annotations/<dataset>`` naming that query (name, description), which
   answers the annotation's id: a flexible board's query panel takes both ids;
3. once all queries exist, ``POST /1/boards`` with a flexible board whose panels are the
   queries in file order (``"type": "flexible"``; Honeycomb no longer accepts the older
   ``queries`` list of classic boards).

The key comes from ``HONEYCOMB_API_KEY`` (a configuration key allowed to manage queries and
boards), sent as the ``X-Honeycomb-Team`` header; ``HONEYCOMB_API_URL`` chooses the region
(default https://api.honeycomb.io, https://api.eu1.honeycomb.io in the EU). ``--dry-run``
prints every request, the key masked, and sends nothing; later requests then show
placeholders where ids from earlier answers would go.

Exit status: 0 the board exists; 1 the API refused a request or could not be reached;
2 usage error (no key without --dry-run, an unreadable or malformed board file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

EXIT_OK, EXIT_API, EXIT_USAGE = 0, 1, 2

ENV_API_KEY = "HONEYCOMB_API_KEY"
ENV_API_URL = "HONEYCOMB_API_URL"
DEFAULT_API_URL = "https://api.honeycomb.io"
DEFAULT_DATASET = "raftd"
DEFAULT_BOARD = Path(__file__).with_name("board.json")
KEY_HEADER = "X-Honeycomb-Team"
QUERY_STYLES = ("graph", "table", "combo")
REQUEST_TIMEOUT_S = 30.0


class UsageError(ValueError):
    """A setting or file cannot be used; the message says which and why (exit 2)."""


class BoardFileError(UsageError):
    """The board file cannot be used; the message says where and why."""


class ApiError(RuntimeError):
    """Honeycomb refused a request or could not be reached."""


@dataclass(frozen=True)
class BoardQuery:
    name: str
    description: str
    style: str
    query: dict[str, Any]


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    queries: tuple[BoardQuery, ...]


@dataclass(frozen=True)
class ApiRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]

    def describe(self) -> str:
        """The request as printed by --dry-run: the key never appears."""
        headers = {
            name: (mask(value) if name.lower() == KEY_HEADER.lower() else value)
            for name, value in self.headers.items()
        }
        lines = [f"{self.method} {self.url}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += ["", json.dumps(self.body, indent=2), ""]
        return "\n".join(lines)


def mask(key: str) -> str:
    return f"<redacted, {len(key)} characters>" if key else f"<{ENV_API_KEY} is not set>"


def load_board(path: Path) -> Board:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BoardFileError(f"{path}: {exc}") from exc
    return parse_board(raw, str(path))


def parse_board(raw: object, where: str = "board") -> Board:
    if not isinstance(raw, dict):
        raise BoardFileError(f"{where}: expected a JSON object")
    name = _text(raw, "name", where)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise BoardFileError(f"{where}: 'description' must be a string")
    items = raw.get("queries")
    if not isinstance(items, list) or not items:
        raise BoardFileError(f"{where}: 'queries' must be a non-empty list")
    queries = []
    for number, item in enumerate(items, 1):
        at = f"{where}: query {number}"
        if not isinstance(item, dict):
            raise BoardFileError(f"{at}: expected a JSON object")
        style = item.get("style", "graph")
        if style not in QUERY_STYLES:
            raise BoardFileError(f"{at}: 'style' must be one of {', '.join(QUERY_STYLES)}")
        spec = item.get("query")
        if not isinstance(spec, dict) or not spec.get("calculations"):
            raise BoardFileError(f"{at}: 'query' must be an object with 'calculations'")
        query_description = item.get("description", "")
        if not isinstance(query_description, str):
            raise BoardFileError(f"{at}: 'description' must be a string")
        queries.append(BoardQuery(_text(item, "name", at), query_description, style, spec))
    return Board(name, description, tuple(queries))


def _text(obj: Mapping[str, Any], field: str, where: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
        raise BoardFileError(f"{where}: {field!r} must be a non-empty string")
    return value


def api_url(environ: Mapping[str, str]) -> str:
    url = environ.get(ENV_API_URL, "").strip() or DEFAULT_API_URL
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise UsageError(
            f"{ENV_API_URL}={url!r}: expected a URL such as {DEFAULT_API_URL} "
            "or https://api.eu1.honeycomb.io"
        )
    return url.rstrip("/")


class Client:
    """The three calls, through ``urllib.request.urlopen`` (looked up at call time)."""

    def __init__(self, base_url: str, key: str, *, dry_run: bool, out: TextIO) -> None:
        self.base_url = base_url
        self.key = key
        self.dry_run = dry_run
        self.out = out
        self.placeholders = 0

    def headers(self) -> dict[str, str]:
        return {
            KEY_HEADER: self.key,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "raftd-create-board",
        }

    def post(self, path: str, body: dict[str, Any], placeholder: str) -> dict[str, Any]:
        request = ApiRequest("POST", self.base_url + path, self.headers(), body)
        if self.dry_run:
            self.out.write(request.describe() + "\n")
            return {"id": f"<{placeholder}>"}
        return send(request)

    def create_query(self, dataset: str, query: BoardQuery) -> str:
        answer = self.post(
            f"/1/queries/{_segment(dataset)}", query.query, f"id of query {query.name!r}"
        )
        return _id(answer, f"query {query.name!r}")

    def create_annotation(self, dataset: str, query: BoardQuery, query_id: str) -> str:
        body = {"name": query.name, "description": query.description, "query_id": query_id}
        answer = self.post(
            f"/1/query_annotations/{_segment(dataset)}",
            body,
            f"id of the annotation of query {query.name!r}",
        )
        return _id(answer, f"annotation of query {query.name!r}")

    def create_board(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post("/1/boards", body, "id of the board")


def _segment(dataset: str) -> str:
    return urllib.parse.quote(dataset, safe="")


def _id(answer: Mapping[str, Any], what: str) -> str:
    value = answer.get("id")
    if not isinstance(value, str) or not value:
        raise ApiError(f"Honeycomb's answer for the {what} has no id: {answer!r}")
    return value


def send(request: ApiRequest) -> dict[str, Any]:
    http_request = urllib.request.Request(
        request.url,
        data=json.dumps(request.body).encode(),
        headers=request.headers,
        method=request.method,
    )
    try:
        with urllib.request.urlopen(http_request, timeout=REQUEST_TIMEOUT_S) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        raise ApiError(
            f"{request.method} {request.url}: HTTP {exc.code} {exc.reason}: {detail}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(f"{request.method} {request.url}: {exc}") from exc
    try:
        answer = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ApiError(f"{request.method} {request.url}: the answer is not JSON") from exc
    if not isinstance(answer, dict):
        raise ApiError(f"{request.method} {request.url}: expected a JSON object, got {answer!r}")
    return answer


def board_body(board: Board, panels: Sequence[tuple[BoardQuery, str, str]]) -> dict[str, Any]:
    """The Boards API body: a flexible board, one query panel per (query, id, annotation id),
    laid out by Honeycomb in the given order."""
    return {
        "name": board.name,
        "description": board.description,
        "type": "flexible",
        "layout_generation": "auto",
        "panels": [
            {
                "type": "query",
                "query_panel": {
                    "query_id": query_id,
                    "query_annotation_id": annotation_id,
                    "query_style": query.style,
                },
            }
            for query, query_id, annotation_id in panels
        ],
    }


def create(board: Board, dataset: str, client: Client) -> dict[str, Any]:
    """All the requests, in order; the Boards API's answer (dry run: a placeholder)."""
    panels = []
    for query in board.queries:
        query_id = client.create_query(dataset, query)
        annotation_id = client.create_annotation(dataset, query, query_id)
        panels.append((query, query_id, annotation_id))
    return client.create_board(board_body(board, panels))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m observability.honeycomb.create_board",
        description="Create raftd's Honeycomb board: one saved query per entry of the board "
        "file, then a board showing them.",
        epilog=f"environment: {ENV_API_KEY} (required unless --dry-run), {ENV_API_URL} "
        f"(default {DEFAULT_API_URL}; https://api.eu1.honeycomb.io in the EU). "
        "Exit status: 0 created, 1 the API refused or was unreachable, 2 usage error.",
    )
    parser.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help=f"dataset the queries run on (default {DEFAULT_DATASET}: the members' "
        "service.name; __all__ for every dataset of the environment)",
    )
    parser.add_argument(
        "--board", type=Path, default=DEFAULT_BOARD, help="board file (default: board.json)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the requests instead of sending them"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    env = os.environ if environ is None else environ
    stdout = sys.stdout if out is None else out
    stderr = sys.stderr if err is None else err
    args = build_parser().parse_args(argv)
    if not args.dataset.strip():
        return _fail(stderr, "--dataset must not be empty", EXIT_USAGE)
    key = env.get(ENV_API_KEY, "").strip()
    if not key and not args.dry_run:
        return _fail(
            stderr,
            f"{ENV_API_KEY} is not set: export a Honeycomb configuration key allowed to "
            "manage queries and boards, or use --dry-run to see the requests without "
            "sending them",
            EXIT_USAGE,
        )
    try:
        base_url = api_url(env)
        board = load_board(args.board)
    except UsageError as exc:
        return _fail(stderr, str(exc), EXIT_USAGE)
    client = Client(base_url, key, dry_run=args.dry_run, out=stdout)
    try:
        answer = create(board, args.dataset, client)
    except ApiError as exc:
        return _fail(stderr, str(exc), EXIT_API)
    if args.dry_run:
        stdout.write(f"dry run: {2 * len(board.queries) + 1} requests shown, none sent\n")
        return EXIT_OK
    links = answer.get("links")
    url = links.get("board_url") if isinstance(links, dict) else None
    stdout.write(
        f"created board {board.name!r} ({answer.get('id', '?')}) with "
        f"{len(board.queries)} queries on dataset {args.dataset!r}"
        + (f": {url}" if url else "")
        + "\n"
    )
    return EXIT_OK


def _fail(err: TextIO, message: str, code: int) -> int:
    err.write(f"create_board: {message}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
