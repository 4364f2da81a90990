"""raftd side by side with etcd and PySyncObj: the same work, on this machine, in one run.

The anchors are scripts kept outside this repository (``--anchors DIR``, with the Python that
their setup made: ``--anchor-python``) that start etcd 3.4 and PySyncObj and load them with
the same work (3 replicas on 127.0.0.1,
16-byte keys from 10,000, 16-byte values, closed-loop Python clients, 2 s warm-up, then a
measured window). This module runs raftd through ``raftctl bench`` on exactly that work,
runs the anchors' scripts beside it, interleaving the systems repetition by repetition
(absolute figures drift on a shared machine, ratios within one run much less), and writes
a markdown report of the ratios of the performance targets (docs/testing.md), with a plot.

Every system starts fresh for each measurement (new data directories), so no run inherits
another's log. A system that cannot run here (no etcd package, no network to install it)
is reported as such; the others still run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ANCHORS_ENV = "RAFTD_BENCH_ANCHORS"
ANCHOR_PYTHON_ENV = "RAFTD_BENCH_ANCHOR_PYTHON"
PORT_OFFSET = 3300  # clients on 10301-10303: clear of a demo cluster and of the test suite
ENDPOINTS = ",".join(f"127.0.0.1:{7001 + i + PORT_OFFSET}" for i in range(3))
READ_KEYS = 1000  # reads: one of 1,000 pre-written keys, as the anchors define them


@dataclass(frozen=True)
class Workload:
    """One row of the comparison: what each system is asked to do."""

    name: str
    raftd: tuple[str, ...]  # raftctl bench arguments
    etcd: tuple[str, ...] | None  # etcd_load.py arguments (None: not comparable)
    pysyncobj: tuple[str, ...] | None  # pysyncobj_bench.py arguments
    raftd_env: tuple[tuple[str, str], ...] = ()
    tls: bool = False  # raftd with mutual TLS on every port (raftd cluster --tls)
    # Workloads of one group differ in one setting and run back to back, in reversed
    # order every other repetition, so drift does not pass for the setting's cost.
    group: str = ""


WORKLOADS = (
    Workload(
        "writes, 64 clients",
        ("--op", "set", "--clients", "64"),
        ("--op", "put", "--conc", "64"),
        ("--conc", "64", "--journal", "file", "--batch", "0"),
        group="writes64",
    ),
    Workload(
        "writes, 64 clients, tracing off",
        ("--op", "set", "--clients", "64"),
        None,
        None,
        (("OTEL_SDK_DISABLED", "true"),),
        group="writes64",
    ),
    Workload(
        "writes, 64 clients, TLS",
        ("--op", "set", "--clients", "64"),
        None,
        None,
        tls=True,
        group="writes64",
    ),
    Workload(
        "writes, 1 client",
        ("--op", "set", "--clients", "1"),
        ("--op", "put", "--conc", "1"),
        ("--conc", "1", "--journal", "file", "--batch", "0"),
        group="writes1",
    ),
    Workload(
        "writes, 1 client, TLS",
        ("--op", "set", "--clients", "1"),
        None,
        None,
        tls=True,
        group="writes1",
    ),
    Workload(
        "linearizable reads, 64 clients",
        ("--op", "get", "--clients", "64", "--keys", str(READ_KEYS)),
        ("--op", "get", "--conc", "64", "--keyspace", str(READ_KEYS)),
        None,  # PySyncObj reads are local only
    ),
)


@dataclass
class Measurement:
    system: str
    workload: str
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # system -> why
    commands: list[str] = field(default_factory=list)

    def median(self, system: str, workload: str, attr: str) -> float | None:
        values = [
            getattr(m, attr)
            for m in self.measurements
            if m.system == system and m.workload == workload
        ]
        return statistics.median(values) if values else None


class Unavailable(Exception):
    """A system cannot be measured on this machine; the reason goes in the report."""


# ----------------------------------------------------------------- helpers


def _run(
    cmd: Sequence[str],
    results: Results,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
) -> str:
    results.commands.append(" ".join(cmd))
    done = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{cmd[0]} ... exited {done.returncode}: {' | '.join(tail)}")
    return done.stdout


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    raise RuntimeError(f"no JSON result in: {text[-300:]!r}")


def _measurement(system: str, workload: str, record: dict[str, Any]) -> Measurement:
    return Measurement(
        system,
        workload,
        float(record["ops_per_s"]),
        float(record["p50_ms"]),
        float(record["p99_ms"]),
        record,
    )


# ----------------------------------------------------------------- raftd


def raftctl(command: str) -> list[str]:
    return [sys.executable, "-m", "cli", "--endpoints", ENDPOINTS, "--output", "json", command]


def client_tls_env(data: Path) -> dict[str, str]:
    """What raftctl needs to reach a ``raftd cluster --tls`` whose data is in ``data``."""
    tls = data / "tls"
    return {
        "RAFTCTL_CACERT": str(tls / "ca.pem"),
        "RAFTCTL_CERT": str(tls / "client.pem"),
        "RAFTCTL_KEY": str(tls / "client-key.pem"),
    }


@contextmanager
def raftd_cluster(
    env: dict[str, str],
    results: Results,
    shown_env: Sequence[tuple[str, str]] = (),
    *,
    tls: bool = False,
    nodes: int = 3,
) -> Iterator[dict[str, str]]:
    """``nodes`` fresh members (fsync on; tracing as ``env`` says; ``tls``: mutual TLS on
    every port), stopped with Ctrl-C. Yields what raftctl's environment needs to reach
    them."""
    data = Path(tempfile.mkdtemp(prefix="raftd-bench-"))
    command = [
        sys.executable,
        "-m",
        "raftd",
        "cluster",
        "--data-dir",
        str(data),
        "--port-offset",
        str(PORT_OFFSET),
        *(["--tls"] if tls else []),
        *(["--nodes", str(nodes)] if nodes != 3 else []),
    ]
    client_env = {**env, **(client_tls_env(data) if tls else {})}
    results.commands.append(" ".join([*(f"{k}={v}" for k, v in shown_env), *command]))
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            status = subprocess.run(
                raftctl("status"),
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
                env=client_env,
            )
            if status.returncode == 0 and '"leader"' in status.stdout:
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the raftd cluster did not elect a leader within 60 s")
            time.sleep(0.3)
        yield client_env
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(data, ignore_errors=True)


def run_raftd(
    workload: Workload,
    timing: tuple[str, ...],
    results: Results,
    *,
    value_size: int = 16,
    nodes: int = 3,
) -> None:
    env = {**os.environ, **dict(workload.raftd_env)}
    with raftd_cluster(
        env, results, workload.raftd_env, tls=workload.tls, nodes=nodes
    ) as client_env:
        out = _run(
            [
                *raftctl("bench"),
                "--no-progress",
                *workload.raftd,
                "--value-size",
                str(value_size),
                *timing,
            ],
            results,
            env=client_env,
            cwd=ROOT,
        )
    results.measurements.append(_measurement("raftd", workload.name, _last_json(out)))


# ----------------------------------------------------------------- anchors


class Anchors:
    """The anchors' scripts, copied to a scratch directory (they write beside themselves)."""

    def __init__(self, source: Path | None, python: Path | None) -> None:
        if source is None:
            raise Unavailable(f"no anchor scripts given (--anchors DIR or ${ANCHORS_ENV})")
        if not (source / "etcd_load.py").exists():
            raise Unavailable(f"no anchor scripts at {source}")
        if python is None:
            raise Unavailable(
                f"no Python for the anchors' clients (--anchor-python or ${ANCHOR_PYTHON_ENV})"
            )
        self.python = python
        self.dir = Path(tempfile.mkdtemp(prefix="anchors-")) / "anchors"
        shutil.copytree(source, self.dir)

    def setup(self, results: Results) -> None:
        try:
            _run(["bash", "setup.sh"], results, cwd=self.dir, timeout=900)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"the anchors' setup.sh failed: {exc}") from None

    def run_etcd(
        self, workload: Workload, timing: tuple[str, ...], results: Results, value_size: int = 16
    ) -> None:
        assert workload.etcd is not None
        _run(["bash", "etcd_cluster.sh", "start"], results, cwd=self.dir)
        try:
            out = _run(
                [
                    str(self.python),
                    "etcd_load.py",
                    *workload.etcd,
                    "--value-size",
                    str(value_size),
                    *timing,
                ],
                results,
                cwd=self.dir,
            )
        finally:
            subprocess.run(
                ["bash", "etcd_cluster.sh", "stop"], cwd=self.dir, check=False, capture_output=True
            )
        results.measurements.append(_measurement("etcd", workload.name, _last_json(out)))

    def run_pysyncobj(self, workload: Workload, timing: tuple[str, ...], results: Results) -> None:
        assert workload.pysyncobj is not None
        base = Path(tempfile.mkdtemp(prefix="pso-"))
        try:
            out = _run(
                [
                    str(self.python),
                    "pysyncobj_bench.py",
                    *workload.pysyncobj,
                    "--value-size",
                    "16",
                    "--base",
                    str(base),
                    *timing,
                ],
                results,
                cwd=self.dir,
            )
        finally:
            shutil.rmtree(base, ignore_errors=True)
        results.measurements.append(_measurement("PySyncObj", workload.name, _last_json(out)))


# ----------------------------------------------------------------- the run


Step = tuple[str, Callable[[], None]]


def run_steps(
    steps: Sequence[Step],
    results: Results,
    log: Callable[[str], None],
    label: str,
    workload: str,
) -> list[Measurement]:
    """Measure each system in turn; one that fails is logged and noted as not measured,
    and the others still run."""
    measured: list[Measurement] = []
    for system, step in steps:
        log(f"{label}: {system} ...")
        try:
            step()
        except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            log(f"  failed: {exc}")
            results.skipped.setdefault(f"{system} ({workload})", str(exc))
            continue
        m = results.measurements[-1]
        log(f"  {m.ops_per_s:,.0f} ops/s, p50 {m.p50_ms:.2f} ms, p99 {m.p99_ms:.2f} ms")
        measured.append(m)
    return measured


def interleaved(workloads: Sequence[Workload], rep: int) -> list[Workload]:
    """The workloads in their order, each group's members reversed on even repetitions:
    tracing on and off, TLS on and off, each measured next to the other, in both orders."""
    order = list(workloads)
    if rep % 2 == 0:
        for group in {w.group for w in workloads if w.group}:
            places = [i for i, w in enumerate(order) if w.group == group]
            members = [order[i] for i in places]
            for i, member in zip(places, reversed(members), strict=True):
                order[i] = member
    return order


def compare(
    *,
    reps: int,
    duration_s: float,
    warmup_s: float,
    anchors_dir: Path | None,
    anchor_python: Path | None,
    systems: Sequence[str],
    log: Callable[[str], None] = print,
    workloads: Sequence[Workload] = WORKLOADS,
) -> Results:
    results = Results()
    anchors: Anchors | None = None
    if {"etcd", "PySyncObj"} & set(systems):
        try:
            anchors = Anchors(anchors_dir, anchor_python)
            log(f"setting up the anchors from {anchors_dir} (etcd from Debian, a venv)")
            anchors.setup(results)
        except Unavailable as exc:
            for system in ("etcd", "PySyncObj"):
                results.skipped[system] = str(exc)
            anchors = None
    # raftctl bench and both anchor scripts take the same two options.
    timing = ("--duration", f"{duration_s:g}", "--warmup", f"{warmup_s:g}")
    for rep in range(1, reps + 1):
        for workload in interleaved(workloads, rep):
            steps: list[Step] = []
            if "raftd" in systems:
                steps.append(("raftd", partial(run_raftd, workload, timing, results)))
            if anchors is not None and workload.etcd is not None and "etcd" in systems:
                steps.append(("etcd", partial(anchors.run_etcd, workload, timing, results)))
            if anchors is not None and workload.pysyncobj is not None and "PySyncObj" in systems:
                steps.append(
                    ("PySyncObj", partial(anchors.run_pysyncobj, workload, timing, results))
                )
            run_steps(steps, results, log, f"rep {rep}/{reps}, {workload.name}", workload.name)
    return results
