"""raftctl get/delete over ranges, lease, lock and elect against three real members, as a
person or a script would use them."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import trio

from tests.integration.harness import ROOT, Cluster
from tests.integration.test_raftctl import json_of, raftctl


async def test_ranges_revisions_and_leases_from_the_command_line(cluster: Cluster) -> None:
    for key in ("job/2", "job/1", "job/10", "jobs"):
        assert (await raftctl(cluster, "set", key, key.upper()))[0] == 0
    assert await raftctl(cluster, "get", "--prefix", "job/") == (
        0,
        "job/1\tJOB/1\njob/10\tJOB/10\njob/2\tJOB/2\n",
        "",
    )
    code, out, err = await raftctl(cluster, "get", "--prefix", "job/", "--limit", "2")
    assert code == 0 and out == "job/1\tJOB/1\njob/10\tJOB/10\n"
    assert "continue with --after 'job/10'" in err
    code, page = await json_of(cluster, "get", "--prefix", "job/", "--after", "job/10")
    assert [item["key"] for item in page["items"]] == ["job/2"] and not page["more"]
    code, page = await json_of(cluster, "get", "--from", "job/10", "--to", "jobs")
    assert [item["key"] for item in page["items"]] == ["job/10", "job/2"]
    code, got = await json_of(cluster, "get", "job/1")
    revision = got["mod_revision"]
    assert got["create_revision"] == revision and got["revision"] >= revision
    assert (await raftctl(cluster, "cas", "job/1", "--revision", str(revision + 1), "x"))[0] == 1
    assert (await raftctl(cluster, "cas", "job/1", "--revision", str(revision), "x"))[0] == 0
    assert await raftctl(cluster, "delete", "--prefix", "job/") == (0, "deleted 3 keys\n", "")

    code, granted = await json_of(cluster, "lease", "grant", "30")
    lease = str(granted["lease"])
    assert (await raftctl(cluster, "set", "owned", "v", "--lease", lease))[0] == 0
    assert await raftctl(cluster, "lease", "keepalive", lease, "--once") == (
        0,
        "kept alive for 30 s\n",
        "",
    )
    assert await raftctl(cluster, "lease", "revoke", lease) == (0, "revoked; 1 keys deleted\n", "")
    assert (await raftctl(cluster, "get", "owned"))[0] == 1
    code, _, err = await raftctl(cluster, "lease", "keepalive", lease, "--once")
    assert code == 1 and "does not exist" in err
    code, _, err = await raftctl(cluster, "set", "late", "v", "--lease", lease)
    assert code == 1 and "not_found" in err
    # Usage mistakes are told as such, before anything is sent.
    for args in (
        ["get"],
        ["get", "k", "--prefix", "p"],
        ["get", "--to", "b"],
        ["get", "k", "--limit", "3"],
        ["get", "k", "--after", "j"],
        ["delete"],
        ["cas", "k", "--absent", "--revision", "0", "v"],
        ["lease", "grant", "0"],
        ["lease", "revoke", "x"],
        ["lock", "name"],
    ):
        code, _, err = await raftctl(cluster, *args)
        assert code == 2 and "error:" in err, args


async def test_lock_holders_run_one_at_a_time_in_order_with_increasing_tokens(
    cluster: Cluster, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    # Each holder writes its token when it starts and again when it ends; overlapping
    # holders would interleave their lines.
    script = (
        f'echo "start $RAFTCTL_LOCK_TOKEN" >> {journal}; sleep 0.3; '
        f'echo "end $RAFTCTL_LOCK_TOKEN" >> {journal}'
    )
    codes: list[int] = []

    async def holder() -> None:
        code, _, _ = await raftctl(cluster, "lock", "jobs", "--ttl", "5", "--", "sh", "-c", script)
        codes.append(code)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(holder)
    assert codes == [0, 0, 0, 0]
    lines = journal.read_text().split()
    pairs = list(zip(lines[0::4], lines[1::4], lines[2::4], lines[3::4], strict=True))
    tokens = []
    for start, token, end, same in pairs:
        assert (start, end) == ("start", "end") and token == same
        tokens.append(int(token))
    assert tokens == sorted(tokens) and len(set(tokens)) == 4
    # The command's status is raftctl's, and the lock is free afterwards.
    code, _, _ = await raftctl(cluster, "lock", "jobs", "--", "sh", "-c", "exit 7")
    assert code == 7
    code, _, err = await raftctl(cluster, "lock", "jobs", "--", "no-such-command-here")
    assert code == 127 and "cannot run" in err


async def test_a_dead_holder_releases_the_lock_when_its_lease_expires(cluster: Cluster) -> None:
    argv = [sys.executable, "-m", "cli", "--endpoints", ",".join(cluster.endpoints)]
    env = {**os.environ, **cluster.raftctl_env}
    async with trio.open_nursery() as nursery:
        first = await nursery.start(
            _started,
            [*argv, "lock", "db", "--ttl", "2", "--", "sleep", "60"],
            env,
        )
        await _wait_for_holder(cluster, "db")
        first.send_signal(signal.SIGKILL)  # raftctl dies: nobody revokes its lease
        started = trio.current_time()
        code, _, err = await raftctl(cluster, "--timeout", "20", "lock", "db", "--", "true")
        waited = trio.current_time() - started
    assert code == 0, err
    assert "waiting: db is held by" in err
    assert 1.0 < waited < 15, waited  # the lease's TTL, then the leader's check


async def test_elect_announces_each_leader_and_resigns_on_sigterm(cluster: Cluster) -> None:
    argv = [sys.executable, "-m", "cli", "--endpoints", ",".join(cluster.endpoints)]
    env = {**os.environ, **cluster.raftctl_env}
    async with trio.open_nursery() as nursery:
        alice = await nursery.start(_started, [*argv, "elect", "shard", "alice"], env)
        await _wait_for_holder(cluster, "shard")
        bob_out: list[bytes] = []
        bob = await nursery.start(_started, [*argv, "elect", "shard", "bob"], env, bob_out)
        with trio.fail_after(20):
            while b"alice\n" not in b"".join(bob_out):
                await trio.sleep(0.05)
        alice.send_signal(signal.SIGTERM)  # resigns: bob leads at once
        assert await alice.wait() == 0
        with trio.fail_after(20):
            while b"alice\nbob\n" not in b"".join(bob_out):
                await trio.sleep(0.05)
        bob.send_signal(signal.SIGTERM)
        assert await bob.wait() == 0
    _, left = await json_of(cluster, "get", "--prefix", "shard/")
    assert left["count"] == 0  # both resigned: nothing left behind


async def _started(
    argv: list[str],
    env: dict[str, str],
    out: list[bytes] | None = None,
    *,
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
) -> None:
    process = await trio.lowlevel.open_process(
        argv, cwd=ROOT, env=env, stdout=None if out is None else -1, stderr=-3
    )
    task_status.started(process)
    try:
        if out is not None:
            assert process.stdout is not None
            async for chunk in process.stdout:
                out.append(bytes(chunk))
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def _wait_for_holder(cluster: Cluster, name: str) -> None:
    with trio.fail_after(20):
        while True:
            _, page = await json_of(cluster, "get", "--prefix", f"{name}/")
            if page["count"]:
                return
            await trio.sleep(0.1)
