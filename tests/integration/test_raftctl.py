"""raftctl against three real members: every command, every exit code, both outputs."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import trio

from tests.integration.harness import ROOT, Cluster


async def raftctl(
    cluster: Cluster, *args: str, endpoints: str | None = None
) -> tuple[int, str, str]:
    argv = [sys.executable, "-m", "cli", "--endpoints", endpoints or ",".join(cluster.endpoints)]
    result = await trio.run_process(
        [*argv, "--timeout", "3", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, **cluster.raftctl_env},
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def json_of(cluster: Cluster, *args: str) -> tuple[int, Any]:
    code, out, _ = await raftctl(cluster, "--output", "json", *args)
    return code, json.loads(out)


async def test_every_command_and_exit_code_against_a_live_cluster(cluster: Cluster) -> None:
    assert await raftctl(cluster, "set", "color", "red") == (0, "OK\n", "")
    assert await raftctl(cluster, "get", "color") == (0, "red\n", "")
    code, _, err = await raftctl(cluster, "get", "nothing")
    assert code == 1 and "not found" in err

    assert (await raftctl(cluster, "cas", "color", "red", "blue"))[:2] == (0, "swapped\n")
    code, out, _ = await raftctl(cluster, "cas", "color", "red", "green")
    assert code == 1 and "blue" in out
    assert (await raftctl(cluster, "cas", "shape", "--absent", "round"))[0] == 0
    assert (await raftctl(cluster, "cas", "shape", "--absent", "square"))[0] == 1

    assert (await raftctl(cluster, "delete", "shape"))[0] == 0
    assert (await raftctl(cluster, "delete", "shape"))[0] == 1

    code, doc = await json_of(cluster, "get", "color")
    assert code == 0 and doc["key"] == "color" and doc["value"] == "blue"
    assert doc["found"] is True and doc["stale"] is False
    code, doc = await json_of(cluster, "cas", "color", "blue", "teal")
    assert code == 0 and doc["swapped"] is True and doc["value"] == "teal"

    code, doc = await json_of(cluster, "status")
    assert code == 0
    members = doc["members"]
    assert sorted(m["id"] for m in members) == ["n1", "n2", "n3"]
    assert sum(m["role"] == "leader" for m in members) == 1
    for m in members:
        assert {"role", "term", "leader", "commit_index", "last_applied", "client_addr"} <= set(m)

    # A stale read from one follower, and one it cannot serve within a zero bound.
    leader = await cluster.wait_for_leader()
    follower = next(n for n in cluster.members if n != leader)
    endpoint = cluster.members[follower].client_addr
    with trio.fail_after(10):
        while True:
            code, out, err = await raftctl(
                cluster, "get", "color", "--max-staleness", "2", endpoints=endpoint
            )
            if out == "teal\n":
                break
            await trio.sleep(0.05)
    assert code == 0 and "stale read" in err
    code, _, err = await raftctl(
        cluster, "get", "color", "--max-staleness", "0", endpoints=endpoint
    )
    assert code == 1 and err

    # Usage mistakes: exit 2, a message, no traceback.
    for args in (["frobnicate"], ["set", "onlykey"], ["--timeout", "-1", "get", "k"]):
        code, _, err = await raftctl(cluster, *args)
        assert code == 2 and "Traceback" not in err, args
    code, _, err = await raftctl(cluster, "get", "k", endpoints="localhost")
    assert code == 2 and "Traceback" not in err


async def test_an_unknown_outcome_exits_3(cluster: Cluster) -> None:
    leader = await cluster.wait_for_leader()
    for name in cluster.members:
        if name != leader:
            await cluster.kill(name)
    code, _, err = await raftctl(cluster, "set", "k", "v")
    assert code == 3 and "may or may not" in err and "Traceback" not in err
    await cluster.kill(leader)
    code, _, err = await raftctl(cluster, "get", "k")
    assert code == 3 and "Traceback" not in err
    code, out, _ = await raftctl(cluster, "--output", "json", "status")
    assert code == 3 and all("error" in m for m in json.loads(out)["members"])
