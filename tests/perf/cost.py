"""``python -m tests.perf.cost``: where a write's time goes, member by member.

Starts three fresh members (``raftd cluster``, fsync and tracing on, as ``make bench``
runs them), loads them with ``raftctl bench``, and while the load runs reads, for each
member and for the bench client, the CPU it used (``/proc/PID/stat``) and, from the
leader's ``/metrics``, how the work was batched: entries per fsync and per AppendEntries,
how long an fsync and an AppendEntries round trip took. Prints one JSON line (and a
table), so docs/performance.md's figures can be measured again and compared. With
``--py-spy S`` it also samples the leader (or, with ``--profile``, a follower or the bench
client) for S seconds and prints where its main thread spends its time (py-spy from the
dev extras).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.perf.compare import PORT_OFFSET, ROOT, Results, raftctl, raftd_cluster

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
COUNTERS = {
    "fsyncs": "raftd_fsync_batch_entries_count",
    "fsync_entries": "raftd_fsync_batch_entries_sum",
    "fsync_s": "raftd_fsync_duration_seconds_sum",
    "appends": "raftd_append_entries_batch_entries_count",
    "append_entries": "raftd_append_entries_batch_entries_sum",
    "append_rtts": 'raftd_rpc_duration_seconds_count{kind="AppendEntries"}',
    "append_rtt_s": 'raftd_rpc_duration_seconds_sum{kind="AppendEntries"}',
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime + stime


def member_pids() -> dict[str, int]:
    """The members of the cluster on this module's ports, by name, from /proc."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        line = b" ".join(args).decode(errors="replace")
        match = re.search(r"raftd run --id (\S+) .*--client-addr 127\.0\.0\.1:(\d+)", line)
        if match and int(match.group(2)) - 7000 - PORT_OFFSET in (1, 2, 3):
            found[match.group(1)] = int(entry.name)
    return found


def scrape(name: str) -> dict[str, float]:
    port = 9100 + int(name.lstrip("n")) + PORT_OFFSET
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):  # not a sample line
            values[key] = float(value)
    return values


def wait_for_leader(env: dict[str, str], timeout_s: float = 30.0) -> str:
    """The leader's name, once a member names one (right after a start, none may yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = json.loads(
            subprocess.run(
                raftctl("status"), capture_output=True, text=True, env=env, cwd=ROOT, check=True
            ).stdout
        )
        leaders = {m["leader"] for m in status["members"] if m.get("leader")}
        if len(leaders) == 1:
            return str(leaders.pop())
        if time.monotonic() > deadline:
            raise RuntimeError(f"no single leader named within {timeout_s:g} s: {status}")
        time.sleep(0.2)


def main_thread_profile(raw: Path, top: int = 25) -> list[tuple[float, str]]:
    """Inclusive shares of the functions on the trio thread's stacks (idle epoll waits out)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "trio/_core/_run.py" not in stack or "get_events" in stack:
            continue
        total += int(n)
        for frame in set(re.sub(r" \(.*?:\d+\)", "", f) for f in stack.split(";")):
            counts[frame] += int(n)
    # Frames on every stack (the interpreter's and trio's outermost) say nothing.
    shares = [(100 * c / total, f) for f, c in counts.most_common() if c < total]
    return shares[:top]


def measure(
    clients: int,
    value_size: int,
    window_s: float,
    py_spy_s: float,
    op: str = "set",
    profiled: str = "leader",
) -> dict[str, Any]:
    results = Results()
    with raftd_cluster(dict(os.environ), results) as env:
        leader = wait_for_leader(env)
        duration = window_s + 4 + py_spy_s
        bench = subprocess.Popen(
            [*raftctl("bench"), "--no-progress", "--op", op, "--clients", str(clients),
             "--value-size", str(value_size), "--duration", f"{duration:g}", "--warmup", "2",
             *(["--keys", "1000"] if op == "get" else [])],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(3)
        pids = {**member_pids(), "client": bench.pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        first, started = scrape(leader), time.monotonic()
        time.sleep(window_s)
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        last, elapsed = scrape(leader), time.monotonic() - started
        profile: list[tuple[float, str]] = []
        if py_spy_s:
            raw = Path(tempfile.mkdtemp(prefix="raftd-cost-")) / f"{profiled}.txt"
            spy = Path(sys.executable).parent / "py-spy"
            follower = next(name for name in pids if name not in (leader, "client"))
            pid = pids[{"leader": leader, "follower": follower}.get(profiled, profiled)]
            subprocess.run(
                [str(spy), "record", "-p", str(pid), "-d", f"{py_spy_s:g}", "-r", "200",
                 "-f", "raw", "-o", str(raw)],
                capture_output=True, check=False,
            )  # fmt: skip
            if raw.exists():
                profile = main_thread_profile(raw)
        out, _ = bench.communicate(timeout=duration + 60)
    record = json.loads(out.strip().splitlines()[-1])
    delta = {k: last.get(v, 0.0) - first.get(v, 0.0) for k, v in COUNTERS.items()}
    served = f'raftd_client_requests_total{{op="{op}",outcome="ok"}}'
    writes = (last.get(served, 0.0) - first.get(served, 0.0)) or 1.0
    cpu = {
        ("leader" if name == leader else name): round(
            1e6 * (after[name] - before[name]) / writes, 1
        )
        for name in pids
    }
    return {
        "clients": clients,
        "value_size": value_size,
        "ops_per_s": record["ops_per_s"],
        "p50_ms": record["p50_ms"],
        "p99_ms": record["p99_ms"],
        "ops_per_s_at_leader": round(writes / elapsed, 1),
        "cpu_us_per_op": cpu,
        "cpu_share_of_two_cores": round(sum(after[n] - before[n] for n in pids) / elapsed / 2, 3),
        "entries_per_fsync": round(delta["fsync_entries"] / max(delta["fsyncs"], 1), 1),
        "fsync_ms": round(1e3 * delta["fsync_s"] / max(delta["fsyncs"], 1), 2),
        "entries_per_append": round(delta["append_entries"] / max(delta["appends"], 1), 1),
        "append_rtt_ms": round(1e3 * delta["append_rtt_s"] / max(delta["append_rtts"], 1), 2),
        "profiled": profiled,
        "main_thread": [[round(share, 1), frame] for share, frame in profile],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--clients", type=int, default=64, help="closed-loop workers (default 64)")
    parser.add_argument(
        "--op",
        choices=("set", "get"),
        default="set",
        help="writes, or linearizable reads of 1,000 pre-written keys (default set)",
    )
    parser.add_argument("--value-size", type=int, default=16, help="bytes per value (default 16)")
    parser.add_argument("--window", type=float, default=8.0, help="measured seconds (default 8)")
    parser.add_argument(
        "--py-spy", type=float, default=0.0, metavar="S", help="profile the leader for S s"
    )
    parser.add_argument(
        "--profile",
        choices=("leader", "follower", "client"),
        default="leader",
        help="whose main thread --py-spy samples (default leader)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.value_size < 0 or args.window <= 0 or args.py_spy < 0:
        parser.error("--clients must be at least 1, --window positive, the others not negative")
    result = measure(args.clients, args.value_size, args.window, args.py_spy, args.op, args.profile)
    print(json.dumps(result))
    for share, frame in result["main_thread"]:
        print(f"  {share:5.1f}%  {frame}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
