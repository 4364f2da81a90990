"""deploy/kubernetes/scale-down.sh, run for real with a stand-in for kubectl: the member
leaves the configuration first, then the StatefulSet shrinks, then its claim goes; the
raftctl commands it runs in the pod are parsed by raftctl's own parser and agree with the
ones docs/deploy.md shows; it refuses, before changing anything, what would do harm."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from cli.raftctl import _check_member, build_parser

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "kubernetes" / "scale-down.sh"

# kubectl as the script meets it: a StatefulSet of $REPLICAS, a cluster listing $MEMBERS
# (less those removed), pods gone once asked to go.
KUBECTL_STUB = """#!/bin/sh
printf '%s\\n' "kubectl $*" >> "$RECORD"
case "$*" in
  *"jsonpath={.spec.replicas}") printf '%s' "$REPLICAS" ;;
  *RAFTD_INITIAL_MEMBERS*) printf '3' ;;
  *volumeClaimTemplates*) printf 'data' ;;
  *" member list")
    [ -z "$LIST_FAILS" ] || exit 1
    echo "NAME     ID  ROLE   PEER          CLIENT        MATCH  LAG  CONTACT"
    for m in $MEMBERS; do
      [ -e "$STATE/removed-$m" ] || echo "$m  1   voter  $m.raftd:7101  $m.raftd:7001  9  0  0.01s"
    done
    echo "leader raftd-0, term 2" ;;
  *" member remove "*) [ -n "$REMOVE_IGNORED" ] || touch "$STATE/removed-${*##* }" ;;
  *"get pod "*) exit 1 ;;
esac
exit 0
"""

FOUR = "raftd-0 raftd-1 raftd-2 raftd-3"


def scale_down(
    tmp_path: Path, *args: str, replicas: int = 4, members: str = FOUR, **flags: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "kubectl").write_text(KUBECTL_STUB)
    (bin_dir / "kubectl").chmod(0o755)
    record = tmp_path / "calls"
    record.touch()
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RECORD": str(record),
        "STATE": str(tmp_path),
        "REPLICAS": str(replicas),
        "MEMBERS": members,
        **{name.upper(): value for name, value in flags.items()},
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )
    return done, record.read_text().splitlines()


def raftctl_args(call: str) -> argparse.Namespace:
    """What raftctl makes of the command a `kubectl exec POD -- raftctl ...` runs."""
    words = shlex.split(call)
    assert words[words.index("--") + 1] == "raftctl", call
    args = build_parser().parse_args(words[words.index("--") + 2 :])
    _check_member(args)
    return args


def test_the_script_parses_and_lints() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    lines = SCRIPT.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines
    assert os.access(SCRIPT, os.X_OK)
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


def test_usage() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("usage: scale-down.sh")
    done = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert done.returncode != 0 and "unknown argument: --bogus" in done.stderr


def test_it_removes_the_member_then_scales_then_deletes_the_claim(tmp_path: Path) -> None:
    done, calls = scale_down(tmp_path)
    assert done.returncode == 0, done.stderr
    remove = next(c for c in calls if " member remove " in c)
    scale = calls.index("kubectl scale statefulset raftd --replicas=3")
    claim = calls.index("kubectl delete pvc data-raftd-3")
    assert calls.index(remove) < scale < claim
    # raftctl, in a pod that stays, as its own parser reads the command.
    assert remove.startswith("kubectl exec raftd-0 -- raftctl ")
    args = raftctl_args(remove)
    assert (args.command, args.action, args.name) == ("member", "remove", "raftd-3")
    assert args.endpoints == "raftd-client:7001"
    for call in (c for c in calls if " -- raftctl " in c):
        raftctl_args(call)  # every raftctl command it runs is one raftctl takes
    # The same removal as the one docs/deploy.md shows by hand, and the docs name the script.
    docs = (ROOT / "docs" / "deploy.md").read_text()
    shown = next(line for line in docs.splitlines() if "member remove raftd-3" in line)
    by_hand = raftctl_args(shown)
    assert (by_hand.action, by_hand.name, by_hand.endpoints) == (
        args.action,
        args.name,
        args.endpoints,
    )
    assert "deploy/kubernetes/scale-down.sh" in docs


def test_a_namespace_goes_to_every_kubectl_call(tmp_path: Path) -> None:
    done, calls = scale_down(tmp_path, "-n", "db", "--keep-volume")
    assert done.returncode == 0, done.stderr
    assert calls and all(c.startswith("kubectl -n db ") for c in calls), calls
    assert not any(" delete pvc " in c for c in calls)


@pytest.mark.parametrize(
    ("why", "replicas", "flags", "says"),
    [
        ("down to the initial members", 3, {}, "not scaling below them"),
        ("the removal did not take", 4, {"remove_ignored": "yes"}, "still a member"),
        ("the cluster did not answer", 4, {"list_fails": "yes"}, "member list failed"),
    ],
)
def test_it_stops_before_scaling_when(
    why: str, replicas: int, flags: dict[str, str], says: str, tmp_path: Path
) -> None:
    done, calls = scale_down(tmp_path, replicas=replicas, **flags)
    assert done.returncode != 0, why
    assert says in done.stderr, done.stderr
    assert not any(" scale " in c or " delete " in c for c in calls), calls


def test_a_member_already_removed_is_not_removed_again(tmp_path: Path) -> None:
    """A run cut short after the removal goes on from there."""
    done, calls = scale_down(tmp_path, members="raftd-0 raftd-1 raftd-2")
    assert done.returncode == 0, done.stderr
    assert not any(" member remove " in c for c in calls)
    assert "kubectl scale statefulset raftd --replicas=3" in calls
