"""raftctl end to end against fake members: output shapes, exit codes, and configuration.

``main`` is synchronous (it runs its own ``trio.run``), so each invocation runs in a worker
thread while the fake members keep serving in the test's own trio loop. Streams and the
environment are passed in, so nothing process-wide is touched.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio

from cli.raftctl import DEFAULT_ENDPOINTS, ENV_ENDPOINTS, main, parse_endpoints
from raftd import version
from tests.cli.fakeserver import (
    ClosedPort,
    FakeKV,
    FakeNode,
    Received,
    Response,
    not_leader,
    start,
)
from tests.integration.harness import ROOT
from wire.api import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    ErrorCode,
    ErrorReply,
    GetReply,
    GetRequest,
    StatusRequest,
)


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        lines = self.out.splitlines()
        assert len(lines) == 1, self.out  # exactly one JSON object, on one line
        return json.loads(lines[0])


async def raftctl(*argv: str, env: dict[str, str] | None = None, stdin: str = "") -> Run:
    out, err = io.StringIO(), io.StringIO()
    run = partial(
        main, list(argv), stdout=out, stderr=err, environ=env or {}, stdin=io.StringIO(stdin)
    )
    code = await trio.to_thread.run_sync(run)
    return Run(code, out.getvalue(), err.getvalue())


@dataclass
class Cluster:
    leader: FakeNode
    follower: FakeNode
    kv: FakeKV

    @property
    def endpoints(self) -> str:
        """Follower first, so every leader-only request exercises the redirect."""
        return f"{self.follower.endpoint},{self.leader.endpoint}"

    async def ctl(self, *argv: str, stdin: str = "") -> Run:
        return await raftctl("--endpoints", self.endpoints, "--timeout", "2", *argv, stdin=stdin)


@pytest.fixture
async def cluster(nursery: trio.Nursery) -> Cluster:
    kv = FakeKV("n1")
    leader = await start(nursery, "n1", kv.handle)
    kv.endpoint = leader.endpoint

    async def follower_handler(received: Received) -> Response:
        request = received.request
        if isinstance(request, StatusRequest):
            reply = kv.status("follower", "n1", leader.endpoint)
            return type(reply)(**{**_fields(reply), "node": "n2", "client_addr": follower.endpoint})
        if isinstance(request, GetRequest) and request.max_staleness_s is not None:
            if request.max_staleness_s < 0.1:
                return ErrorReply(ErrorCode.TOO_STALE, "last heard from n1 0.12 s ago", True)
            value = kv.data.get(request.key)
            return GetReply(value is not None, value, "n2", True, 0.12)
        return not_leader("n1", leader.endpoint)

    follower = await start(nursery, "n2", follower_handler)
    return Cluster(leader, follower, kv)


@pytest.fixture
def closed_port() -> Iterator[ClosedPort]:
    port = ClosedPort()
    yield port
    port.close()


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


# ----------------------------------------------------------------- get / set


async def test_set_then_get_in_text(cluster: Cluster) -> None:
    assert await cluster.ctl("set", "greeting", "hello world") == Run(0, "OK\n", "")
    assert await cluster.ctl("get", "greeting") == Run(0, "hello world\n", "")
    assert cluster.kv.data == {"greeting": "hello world"}


async def test_get_of_a_missing_key_exits_1(cluster: Cluster) -> None:
    run = await cluster.ctl("get", "nope")
    assert (run.code, run.out) == (1, "")
    assert run.err == "raftctl: key 'nope' not found\n"


async def test_get_and_set_in_json(cluster: Cluster) -> None:
    run = await cluster.ctl("--output", "json", "set", "k", "v")
    assert run.code == 0
    assert run.json == {"key": "k", "value": "v", "ok": True, "index": 1}
    run = await cluster.ctl("--output", "json", "get", "k")
    assert run.code == 0
    assert run.json == {
        "key": "k",
        "value": "v",
        "found": True,
        "stale": False,
        "max_age_s": None,
        "served_by": "n1",
        "revision": 0,
        "create_revision": 0,
        "mod_revision": 0,
        "lease": 0,
    }
    run = await cluster.ctl("--output", "json", "get", "missing")
    assert run.code == 1
    assert (run.json["found"], run.json["value"]) == (False, None)
    assert run.err == ""


async def test_stale_get_prints_the_value_and_a_note(cluster: Cluster) -> None:
    cluster.kv.data["k"] = "v"
    run = await cluster.ctl("get", "k", "--max-staleness", "1.5")
    assert run == Run(0, "v\n", "raftctl: stale read from n2: at most 0.12 s old\n")
    assert cluster.follower.requests() == [GetRequest("k", 1.5)]
    run = await cluster.ctl("--output", "json", "get", "k", "--max-staleness", "1.5")
    assert run.json == {
        "key": "k",
        "value": "v",
        "found": True,
        "stale": True,
        "max_age_s": 0.12,
        "served_by": "n2",
        "revision": 0,
        "create_revision": 0,
        "mod_revision": 0,
        "lease": 0,
    }
    assert run.err == ""


async def test_too_stale_is_a_definite_refusal(cluster: Cluster) -> None:
    run = await cluster.ctl("get", "k", "--max-staleness", "0.05")
    assert (run.code, run.out) == (1, "")
    assert run.err == (
        f"raftctl: refused by {cluster.follower.endpoint} (too_stale): "
        "last heard from n1 0.12 s ago\n"
    )
    run = await cluster.ctl("--output", "json", "get", "k", "--max-staleness", "0.05")
    assert run.code == 1
    assert run.json == {
        "error": {
            "code": "too_stale",
            "message": "last heard from n1 0.12 s ago",
            "definite": True,
            "endpoint": cluster.follower.endpoint,
        }
    }


# ------------------------------------------------------------- cas / delete


async def test_cas_in_text(cluster: Cluster) -> None:
    assert await cluster.ctl("cas", "k", "--absent", "one") == Run(0, "swapped\n", "")
    assert await cluster.ctl("cas", "k", "one", "two") == Run(0, "swapped\n", "")
    assert await cluster.ctl("cas", "k", "one", "three") == Run(
        1, "not swapped: current value is 'two'\n", ""
    )
    assert await cluster.ctl("cas", "k", "--absent", "four") == Run(
        1, "not swapped: current value is 'two'\n", ""
    )
    assert await cluster.ctl("cas", "other", "x", "y") == Run(1, "not swapped: key is absent\n", "")
    assert cluster.kv.data == {"k": "two"}


async def test_cas_in_json(cluster: Cluster) -> None:
    run = await cluster.ctl("--output", "json", "cas", "k", "--absent", "one")
    assert run.code == 0
    assert run.json == {"key": "k", "swapped": True, "value": "one", "found": True, "index": 1}
    run = await cluster.ctl("--output", "json", "cas", "k", "zero", "two")
    assert run.code == 1
    assert run.json == {"key": "k", "swapped": False, "value": "one", "found": True, "index": 2}


async def test_delete(cluster: Cluster) -> None:
    cluster.kv.data["k"] = "v"
    assert await cluster.ctl("delete", "k") == Run(0, "deleted\n", "")
    assert await cluster.ctl("delete", "k") == Run(1, "not deleted: key is absent\n", "")
    run = await cluster.ctl("--output", "json", "delete", "k")
    assert run.code == 1
    assert run.json == {"key": "k", "deleted": False, "index": 3}


async def test_values_that_look_like_options_after_a_double_dash(cluster: Cluster) -> None:
    assert (await cluster.ctl("set", "--", "-k", "-v")).code == 0
    assert cluster.kv.data == {"-k": "-v"}


async def test_global_options_also_work_after_the_command(cluster: Cluster) -> None:
    cluster.kv.data["k"] = "v"
    run = await raftctl("get", "k", "--output", "json", "--endpoints", cluster.endpoints)
    assert run.json["value"] == "v"


# -------------------------------------------------------------------- status


async def test_status_table_shows_unreachable_members(
    cluster: Cluster, closed_port: ClosedPort
) -> None:
    cluster.kv.data["k"] = "v"
    cluster.kv.index = 12
    endpoints = f"{cluster.leader.endpoint},{cluster.follower.endpoint},{closed_port.endpoint}"
    run = await raftctl("--endpoints", endpoints, "status")
    assert (run.code, run.err) == (0, "")
    lines = run.out.splitlines()
    assert lines[0].split() == ["ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED"]
    assert lines[1].split() == [cluster.leader.endpoint, "n1", "leader", "3", "n1", "12", "12"]
    assert lines[2].split() == [cluster.follower.endpoint, "n2", "follower", "3", "n1", "12", "12"]
    assert lines[3].split()[:3] == [closed_port.endpoint, "-", "unreachable"]
    assert lines[3].endswith("(connection refused)")
    # Aligned: every column starts at the same offset on every line.
    starts = [lines[0].index(title) for title in ("ID", "ROLE", "TERM", "COMMIT")]
    for line in lines[1:]:
        for column in starts:
            assert line[column - 2 : column] == "  " and line[column] != " "


async def test_status_in_json(cluster: Cluster, closed_port: ClosedPort) -> None:
    endpoints = f"{cluster.leader.endpoint},{closed_port.endpoint}"
    run = await raftctl("--endpoints", endpoints, "--output", "json", "status")
    assert run.code == 0
    assert run.json == {
        "members": [
            {
                "endpoint": cluster.leader.endpoint,
                "id": "n1",
                "role": "leader",
                "term": 3,
                "leader": "n1",
                "commit_index": 0,
                "last_applied": 0,
                "last_index": 0,
                "client_addr": cluster.leader.endpoint,
                "leader_addr": cluster.leader.endpoint,
            },
            {
                "endpoint": closed_port.endpoint,
                "error": {
                    "code": "unreachable",
                    "message": f"cannot reach {closed_port.endpoint}: connection refused",
                    "definite": True,
                },
            },
        ]
    }


async def test_status_with_no_member_answering_exits_3(closed_port: ClosedPort) -> None:
    run = await raftctl("--endpoints", closed_port.endpoint, "status")
    assert run.code == 3
    assert "unreachable" in run.out
    assert run.err == "raftctl: no member answered\n"
    run = await raftctl("--endpoints", closed_port.endpoint, "--output", "json", "status")
    assert run.code == 3
    assert run.json["error"]["code"] == "unreachable"
    assert "error" in run.json["members"][0]


# ------------------------------------------------------------ cluster trouble


async def test_a_write_without_a_definite_answer_exits_3(nursery: trio.Nursery) -> None:
    async def never(_: Received) -> Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    node = await start(nursery, "n1", never)
    run = await raftctl("--endpoints", node.endpoint, "--timeout", "0.2", "set", "k", "v")
    assert (run.code, run.out) == (3, "")
    assert run.err.startswith("raftctl: no definite answer within 0.2 s")
    assert run.err.endswith(": the write may or may not have happened\n")
    assert "Traceback" not in run.err
    args = ("--endpoints", node.endpoint, "--timeout", "0.2", "--output", "json")
    run = await raftctl(*args, "delete", "k")
    assert run.code == 3
    assert run.json["error"]["code"] == "timeout"
    assert run.json["error"]["definite"] is False


async def test_an_unreachable_cluster_exits_3_and_says_nothing_was_written(
    closed_port: ClosedPort,
) -> None:
    run = await raftctl("--endpoints", closed_port.endpoint, "--timeout", "0.1", "set", "k", "v")
    assert run == Run(
        3,
        "",
        f"raftctl: cannot reach the cluster at {closed_port.endpoint}: connection refused"
        " (nothing was written)\n",
    )
    run = await raftctl("--endpoints", closed_port.endpoint, "--timeout", "0.1", "get", "k")
    assert run.code == 3
    assert run.err.endswith("(nothing was read)\n")


async def test_a_definite_server_refusal_exits_1(nursery: trio.Nursery) -> None:
    async def refuse(_: Received) -> Response:
        return ErrorReply(ErrorCode.BAD_REQUEST, "key too long", True)

    node = await start(nursery, "n1", refuse)
    run = await raftctl("--endpoints", node.endpoint, "--output", "json", "set", "k", "v")
    assert run.code == 1
    assert run.json["error"] == {
        "code": "bad_request",
        "message": "key too long",
        "definite": True,
        "endpoint": node.endpoint,
    }


async def test_an_oversized_key_or_value_exits_1_naming_the_limit(cluster: Cluster) -> None:
    """Checked before anything is sent: the fake members see no request at all."""
    over_value = "v" * (MAX_VALUE_BYTES + 1)
    over_key = "k" * (MAX_KEY_BYTES + 1)
    value_error = (
        f"value is {MAX_VALUE_BYTES + 1} bytes, over the limit of {MAX_VALUE_BYTES} bytes"
        " (MAX_VALUE_BYTES); nothing was sent"
    )
    key_error = (
        f"key is {MAX_KEY_BYTES + 1} bytes, over the limit of {MAX_KEY_BYTES} bytes"
        " (MAX_KEY_BYTES); nothing was sent"
    )
    for argv, message in [
        (("set", "k", over_value), value_error),
        (("cas", "k", "old", over_value), value_error),
        (("cas", "k", "--absent", over_value), value_error),
        (("cas", "k", over_value, "new"), "expected " + value_error),
        (("set", over_key, "v"), key_error),
        (("get", over_key), key_error),
        (("delete", over_key), key_error),
    ]:
        run = await cluster.ctl(*argv)
        assert (run.code, run.out) == (1, ""), argv[:2]
        assert run.err == f"raftctl: refused (too_large): {message}\n", argv[:2]
    run = await cluster.ctl("--output", "json", "set", "k", over_value)
    assert run.code == 1
    assert run.json == {"error": {"code": "too_large", "message": value_error, "definite": True}}
    assert cluster.leader.received == [] and cluster.follower.received == []
    # Exactly at the limits is a value like any other.
    assert await cluster.ctl("set", "k" * MAX_KEY_BYTES, "v" * MAX_VALUE_BYTES) == Run(
        0, "OK\n", ""
    )
    assert cluster.kv.data == {"k" * MAX_KEY_BYTES: "v" * MAX_VALUE_BYTES}


async def test_a_too_large_refusal_from_a_member_exits_1_with_its_message(
    nursery: trio.Nursery,
) -> None:
    """A member with a lower limit than this raftctl (another version) still gets its
    reason through, as a definite refusal."""
    message = (
        "value is 20 bytes, over the limit of 10 bytes (MAX_VALUE_BYTES); nothing was proposed"
    )

    async def refuse(_: Received) -> Response:
        return ErrorReply(ErrorCode.TOO_LARGE, message, True)

    node = await start(nursery, "n1", refuse)
    run = await raftctl("--endpoints", node.endpoint, "set", "k", "v" * 20)
    assert run == Run(1, "", f"raftctl: refused by {node.endpoint} (too_large): {message}\n")


# -------------------------------------------------------------- configuration


async def test_endpoints_come_from_the_environment(cluster: Cluster) -> None:
    cluster.kv.data["k"] = "v"
    run = await raftctl("get", "k", env={ENV_ENDPOINTS: cluster.endpoints})
    assert run == Run(0, "v\n", "")


async def test_the_flag_wins_over_the_environment(
    cluster: Cluster, closed_port: ClosedPort
) -> None:
    cluster.kv.data["k"] = "v"
    env = {ENV_ENDPOINTS: closed_port.endpoint}
    run = await raftctl("--endpoints", cluster.endpoints, "get", "k", env=env)
    assert run == Run(0, "v\n", "")


async def test_process_environment_is_the_default(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.kv.data["k"] = "v"
    monkeypatch.setenv(ENV_ENDPOINTS, cluster.endpoints)
    out, err = io.StringIO(), io.StringIO()
    code = await trio.to_thread.run_sync(partial(main, ["get", "k"], stdout=out, stderr=err))
    assert (code, out.getvalue()) == (0, "v\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--endpoints", "localhost", "get", "k"],
            "raftctl: --endpoints: endpoint 'localhost' has no port: expected HOST:PORT,"
            " e.g. 127.0.0.1:7001\n",
        ),
        (
            ["--endpoints", "127.0.0.1:70x1", "get", "k"],
            "raftctl: --endpoints: endpoint '127.0.0.1:70x1': the port must be a number"
            " from 1 to 65535\n",
        ),
        (
            ["--endpoints", "127.0.0.1:7001,,127.0.0.1:7002", "get", "k"],
            "raftctl: --endpoints '127.0.0.1:7001,,127.0.0.1:7002' has an empty entry\n",
        ),
        (["--endpoints", "", "get", "k"], "raftctl: --endpoints lists no endpoints\n"),
    ],
)
async def test_bad_endpoints_are_configuration_errors(argv: list[str], message: str) -> None:
    assert await raftctl(*argv) == Run(2, "", message)


async def test_bad_endpoints_in_json_mode_give_a_json_error() -> None:
    run = await raftctl("--output", "json", "--endpoints", "h:0", "status")
    assert (run.code, run.err) == (2, "")
    assert run.json["error"]["code"] == "usage"
    assert "the port must be a number" in run.json["error"]["message"]


async def test_bad_endpoints_from_the_environment_name_the_variable() -> None:
    run = await raftctl("get", "k", env={ENV_ENDPOINTS: "127.0.0.1"})
    assert run.code == 2
    assert run.err.startswith(f"raftctl: {ENV_ENDPOINTS}: endpoint '127.0.0.1' has no port")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--timeout", "-1", "get", "k"], "--timeout must be more than zero seconds"),
        (["--timeout", "0", "get", "k"], "--timeout must be more than zero seconds"),
        (["--timeout", "soon", "get", "k"], "--timeout must be a number of seconds"),
        (["--timeout", "nan", "get", "k"], "--timeout must be more than zero seconds"),
        (["get", "k", "--max-staleness", "-0.5"], "--max-staleness must be zero or more"),
        (["get"], "give exactly one of KEY, --prefix or --from"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
        (["--output", "yaml", "status"], "invalid choice: 'yaml'"),
        (["set", "k"], "the following arguments are required: VALUE"),
        (["cas", "k", "v"], "expected KEY EXPECTED NEW"),
        (["cas", "k", "a", "b", "c"], "expected KEY EXPECTED NEW"),
        (["cas", "k", "--absent", "a", "b"], "expected KEY --absent NEW"),
        (["status", "extra"], "unrecognized arguments: extra"),
        (["member", "list", "n1"], "member list takes no NAME"),
        (["member", "promote"], "member promote needs NAME"),
        (["member", "add", "n4"], "member add needs --peer-addr and --client-addr"),
        (["member", "add", "n4", "--peer-addr", "h:1", "--client-addr", "nope"], "--client-addr"),
        (["member", "remove", "n2", "--learner"], "are for member add"),
        (["member", "join"], "invalid choice: 'join'"),
        (["move-leader"], "the following arguments are required: NAME"),
    ],
)
async def test_usage_errors_exit_2(argv: list[str], error: str) -> None:
    run = await raftctl(*argv)
    assert (run.code, run.out) == (2, "")
    assert run.err.startswith("usage: raftctl")
    assert error in run.err
    assert "Traceback" not in run.err


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        *[
            [c, "--help"]
            for c in ("get", "set", "cas", "delete", "status", "member", "move-leader")
        ],
    ],
)
async def test_help_explains_arguments_and_exit_codes(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as caught:
        await trio.to_thread.run_sync(partial(main, argv, stdout=out, stderr=err, environ={}))
    assert caught.value.code == 0
    text = out.getvalue()
    assert text.startswith("usage: raftctl")
    assert "exit codes:" in text
    for code in ("0  success", "1  a definite failure", "2  usage", "3  outcome unknown"):
        assert code in text
    assert ENV_ENDPOINTS in text
    assert err.getvalue() == ""


async def test_version_goes_to_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as caught:
        await trio.to_thread.run_sync(partial(main, ["--version"], stdout=out, stderr=err))
    assert caught.value.code == 0
    assert out.getvalue() == f"raftctl {version()}\n" and err.getvalue() == ""
    assert version()[0].isdigit()  # the installed distribution's, not "unknown"


def test_parse_endpoints_keeps_order_and_drops_duplicates() -> None:
    assert parse_endpoints(" a:1, b:2 ,a:1", source="x") == ["a:1", "b:2"]
    assert parse_endpoints(DEFAULT_ENDPOINTS, source="x") == DEFAULT_ENDPOINTS.split(",")


async def test_python_dash_m_cli_runs_raftctl() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "cli", "--help"], capture_stdout=True, capture_stderr=True
    )
    assert result.returncode == 0
    assert result.stdout.decode().startswith("usage: raftctl")
    failed = await trio.run_process(
        [sys.executable, "-m", "cli", "--endpoints", "nowhere", "status"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert failed.returncode == 2
    assert b"has no port" in failed.stderr


# ----------------------------------------------------------------- values on stdin


async def test_a_value_too_large_for_the_command_line_comes_from_stdin(cluster: Cluster) -> None:
    big = "x" * (300 * 1024) + "\n"  # over what one argument may hold; the newline is kept
    run = await cluster.ctl("set", "big", "-", stdin=big)
    assert (run.code, run.out) == (0, "OK\n"), run.err
    assert cluster.kv.data["big"] == big
    swapped = await cluster.ctl("cas", "big", "-", "small", stdin=big)
    assert (swapped.code, swapped.out) == (0, "swapped\n"), swapped.err
    assert cluster.kv.data["big"] == "small"


async def test_a_value_from_stdin_over_the_limit_is_refused_before_sending(
    cluster: Cluster,
) -> None:
    run = await cluster.ctl("set", "k", "-", stdin="v" * (MAX_VALUE_BYTES + 1))
    assert run.code == 1
    assert "MAX_VALUE_BYTES" in run.err and "nothing was sent" in run.err
    assert "k" not in cluster.kv.data


async def test_only_one_value_of_a_cas_can_come_from_stdin() -> None:
    run = await raftctl("cas", "k", "-", "-", stdin="v")
    assert run.code == 2
    assert "only one of EXPECTED and NEW can be -" in run.err


def test_a_value_from_stdin_must_be_utf8_and_not_a_terminal() -> None:
    def ctl(stdin: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "--endpoints", "127.0.0.1:9", "set", "k", "-"],
            stdin=stdin, capture_output=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip

    binary = subprocess.run(
        [sys.executable, "-m", "cli", "--endpoints", "127.0.0.1:9", "set", "k", "-"],
        input=b"\xff\xfe", capture_output=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert binary.returncode == 2
    assert b"not UTF-8 text" in binary.stderr and b"Traceback" not in binary.stderr
    leader, follower = pty.openpty()
    try:
        terminal = ctl(follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert terminal.returncode == 2
    assert b"standard input is a terminal" in terminal.stderr
