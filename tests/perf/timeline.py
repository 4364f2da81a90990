"""``python -m tests.perf.timeline``: where one write's latency goes, hop by hop.

Starts three fresh members and ``raftctl bench`` as ``tests.perf.cost`` does, with
``tests/perf/timeline_hook`` on their PYTHONPATH: every process marks, on one clock, when
it decoded a frame, encoded one, wrote to a socket, proposed an entry and ran an fsync.
The marks of a few seconds are merged; at one client (the default) each write's chain
(client -> leader -> followers -> leader -> client) is cut into hops and the median of
each hop printed; ``--chains N`` also prints N whole chains, and with more clients
``--window-ms`` prints the merged marks of a slice of time, process by process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.perf.compare import ROOT, Results, raftctl, raftd_cluster
from tests.perf.cost import member_pids, wait_for_leader

HOOK = Path(__file__).resolve().parent / "timeline_hook"
STARTUP_S = 12.0  # from launching the members to the first mark: election and warm-up

Event = tuple[int, str, str]  # (ns, process, mark)

# (hop, process it ends in, the mark that ends it): each hop starts where the last ended.
HOPS = [
    ("client: encode and write the request", "C", "written"),
    ("to the leader", "L", "rx:SetRequest"),
    ("leader: decode, queue, propose", "L", "propose"),
    ("leader: Ready, build and write the AppendEntries", "L", "written"),
    ("to the first follower", "F", "rx:AppendEntries"),
    ("follower: step, stage, start the fsync", "F", "fsync"),
    ("follower: fsync", "F", "fsynced"),
    ("follower: encode and write the answer", "F", "written"),
    ("to the leader", "L", "rx:AppendEntriesResponse"),
    ("leader: commit, apply, encode and write the reply", "L", "written"),
    ("to the client", "C", "rx:WriteReply"),
]


def record(clients: int, window_s: float) -> tuple[list[Event], dict[int, str]]:
    marks = Path(tempfile.mkdtemp(prefix="raftd-timeline-"))
    start_ns = time.perf_counter_ns() + int(STARTUP_S * 1e9)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(HOOK), str(ROOT), os.environ.get("PYTHONPATH")])
        ),
        "RAFTD_TIMELINE_DIR": str(marks),
        "RAFTD_TIMELINE_START_NS": str(start_ns),
        "RAFTD_TIMELINE_END_NS": str(start_ns + int(window_s * 1e9)),
    }
    with raftd_cluster(env, Results()) as client_env:
        leader = wait_for_leader(client_env)
        left_s = (start_ns - time.perf_counter_ns()) / 1e9
        if left_s < 2:
            raise RuntimeError("the members took too long to start; try again")
        duration = left_s + window_s + 2
        marked = {
            k: v for k, v in env.items() if k == "PYTHONPATH" or k.startswith("RAFTD_TIMELINE")
        }
        subprocess.run(
            [*raftctl("bench"), "--no-progress", "--clients", str(clients),
             "--duration", f"{duration:.1f}", "--warmup", "0"],
            cwd=ROOT, env={**client_env, **marked}, capture_output=True, check=True,
        )  # fmt: skip
        roles = {
            pid: ("L" if name == leader else f"F{name}") for name, pid in member_pids().items()
        }
    events: list[Event] = []
    for path in marks.glob("*.txt"):
        pid = int(path.stem)
        role = roles.get(pid, "C")  # the members are known by pid; the other file is the client's
        for line in path.read_text().splitlines():
            ns, tag = line.split(" ", 1)
            events.append((int(ns), role, tag))
    events.sort()
    return events, roles


def chains(events: list[Event]) -> list[list[tuple[str, int]]]:
    """Each write's hops as (hop, ns), found in order along the merged marks."""
    found: list[list[tuple[str, int]]] = []
    starts = [i for i, (_, who, tag) in enumerate(events) if who == "C" and tag == "enc:SetRequest"]
    for i in starts:
        chain = [("start", events[i][0])]
        at = i + 1
        for hop, who, tag in HOPS:
            while at < len(events):
                _, where, what = events[at]
                if what == tag and (where == who or (who == "F" and where.startswith("F"))):
                    break
                at += 1
            if at == len(events):
                break
            chain.append((hop, events[at][0]))
            at += 1
        if len(chain) == len(HOPS) + 1:
            found.append(chain)
    return found


def window_lines(events: list[Event], from_ms: float, length_ms: float) -> list[str]:
    """The marks from ``from_ms`` into the window for ``length_ms``, a column per process
    (client, leader, then each follower), times in µs from the slice's start."""
    origin = events[0][0] + int(from_ms * 1e6)
    end = origin + int(length_ms * 1e6)
    followers = sorted({w for _, w, _ in events if w.startswith("F")})
    column = {"C": 0, "L": 1} | {f: 2 + n for n, f in enumerate(followers)}
    return [
        f"{(ns - origin) / 1e3:9.1f} {'':{24 * column[who]}}{who} {tag}"
        for ns, who, tag in events
        if origin <= ns <= end
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.timeline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--clients", type=int, default=1, help="closed-loop writers (default 1)")
    parser.add_argument("--window", type=float, default=3.0, help="seconds marked (default 3)")
    parser.add_argument("--chains", type=int, default=0, help="print this many whole chains")
    parser.add_argument(
        "--window-ms", type=float, nargs=2, metavar=("FROM", "LENGTH"),
        help="print the merged marks from FROM ms into the window, for LENGTH ms",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.clients < 1 or args.window <= 0 or args.chains < 0:
        parser.error("--clients and --window must be positive, --chains not negative")
    events, _ = record(args.clients, args.window)
    if not events:
        print("no marks were recorded", file=sys.stderr)
        return 1
    if args.window_ms:
        print("\n".join(window_lines(events, *args.window_ms)))
        return 0
    found = chains(events) if args.clients == 1 else []
    if not found:
        print("no whole write chains (hops are cut at one client only); try --window-ms")
        return 0
    print(f"{len(found)} writes, median µs per hop:")
    for n, (hop, _, _) in enumerate(HOPS, start=1):
        spans = [chain[n][1] - chain[n - 1][1] for chain in found]
        print(f"  {statistics.median(spans) / 1e3:7.1f}  {hop}")
    total = statistics.median(chain[-1][1] - chain[0][1] for chain in found)
    print(f"  {total / 1e3:7.1f}  the whole write")
    for chain in found[len(found) // 2 : len(found) // 2 + args.chains]:
        print("--")
        for hop, ns in chain[1:]:
            print(f"  {(ns - chain[0][1]) / 1e3:8.1f}  {hop}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
