"""A member's identity on real processes: flags that disagree with the data directory are
refused before anything is touched, and a directory from before identities is adopted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import trio

from tests.integration.harness import ROOT, Cluster, free_port, running
from tests.integration.test_cluster import Writer, get

IDENTITY = "member.json"


def files_of(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir()) if p.name != "LOCK"}


def with_flag(command: list[str], flag: str, value: str) -> list[str]:
    changed = list(command)
    if flag in changed:
        changed[changed.index(flag) + 1] = value
    else:
        changed += [flag, value]
    return changed


async def test_flags_that_disagree_with_the_data_directory_are_refused_untouched(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cluster = Cluster(tmp_path, 3)
    async with running(cluster, nursery):
        await Writer(cluster).set("k", "before")
    n1 = cluster.members["n1"]
    stored = json.loads((n1.data_dir / IDENTITY).read_text())
    assert stored["members"] == {"n1": 1, "n2": 2, "n3": 3} and stored["name"] == "n1"
    before = files_of(n1.data_dir)
    command = cluster.command("n1")
    cluster_flag = command[command.index("--cluster") + 1]
    cases = {
        # Adding n0 used to renumber every member: n1's stored vote became a vote for n0.
        "--cluster": (f"n0=127.0.0.1:{free_port()},{cluster_flag}",
                      "--cluster names n0, n1, n2, n3, but this member's cluster has n1, n2, n3"),
        "--id": ("n2", "holds member 'n1', not 'n2'"),
        "--cluster-id": ("other", "belongs to cluster 'raftd', not 'other'"),
    }  # fmt: skip
    for flag, (value, message) in cases.items():
        result = subprocess.run(
            with_flag(command, flag, value),
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2, (flag, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert files_of(n1.data_dir) == before, flag
    # A directory written before identities were stored: adopted with the ids it had.
    (n1.data_dir / IDENTITY).unlink()
    for name in cluster.members:
        await cluster.start_member(name)
    try:
        await cluster.wait_all_serving(timeout_s=30)
        leader = await cluster.wait_for_leader()
        assert (await get(cluster, leader, "k")).value == "before"
        assert "written before identities were stored" in cluster.log_text("n1")
        assert json.loads((n1.data_dir / IDENTITY).read_text()) == stored
    finally:
        await cluster.shutdown()
