"""``raftd cluster``: N local members as separate processes, their logs merged.

Separate processes (not tasks in one process) so that killing one is a real crash, exactly
as it would be on separate machines. Member i listens for clients on 7000+i, for peers on
7100+i and for Prometheus on 9100+i; its data lives in DATA_DIR/n<i> and survives restarts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from raftd import certs

CLIENT_BASE, PEER_BASE, METRICS_BASE = 7000, 7100, 9100
STOP_GRACE_S = 5.0
READY_TIMEOUT_S = 20.0


def member_table(nodes: int, data_dir: Path, port_offset: int = 0) -> list[dict[str, str]]:
    return [
        {
            "id": f"n{i}",
            "client": f"127.0.0.1:{CLIENT_BASE + port_offset + i}",
            "peer": f"127.0.0.1:{PEER_BASE + port_offset + i}",
            "metrics": f"127.0.0.1:{METRICS_BASE + port_offset + i}",
            "data_dir": str(data_dir / f"n{i}"),
        }
        for i in range(1, nodes + 1)
    ]


def member_command(
    member: dict[str, str], cluster: str, *, forward: bool, tls_dir: Path | None = None
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "raftd",
        "run",
        "--id",
        member["id"],
        "--cluster",
        cluster,
        "--client-addr",
        member["client"],
        "--data-dir",
        member["data_dir"],
        "--metrics-addr",
        member["metrics"],
        "--log-format",
        "console",  # merged for a person, even though the member's stderr is a pipe
    ]
    if tls_dir is not None:
        cert, key = str(tls_dir / f"{member['id']}.pem"), str(tls_dir / f"{member['id']}-key.pem")
        ca = str(tls_dir / certs.CA_CERT)
        command += ["--peer-cert", cert, "--peer-key", key, "--peer-ca", ca]
        command += ["--client-cert", cert, "--client-key", key, "--client-ca", ca]
    return [*command, "--forward"] if forward else command


def ensure_certificates(tls_dir: Path, names: list[str]) -> None:
    """A development CA and certificates for every member and for raftctl, made once and
    kept with the data (``raftd certs``); members added since get theirs from the same CA."""
    missing = [n for n in names if not (tls_dir / f"{n}.pem").exists()]
    if missing or not (tls_dir / certs.CA_CERT).exists():
        written = certs.write_bundle(tls_dir, missing)
        print(f"wrote {len(written)} TLS files to {tls_dir} (raftd certs)")


def raftctl_tls_env(tls_dir: Path | None) -> dict[str, str]:
    if tls_dir is None:
        return {}
    return {
        "RAFTCTL_CACERT": str(tls_dir / certs.CA_CERT),
        "RAFTCTL_CERT": str(tls_dir / "client.pem"),
        "RAFTCTL_KEY": str(tls_dir / "client-key.pem"),
    }


def run_cluster(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 9:
        print("raftd cluster: --nodes must be between 1 and 9", file=sys.stderr)
        return 2
    if not 0 <= args.port_offset <= 50000:
        print("raftd cluster: --port-offset must be between 0 and 50000", file=sys.stderr)
        return 2
    members = member_table(args.nodes, Path(args.data_dir), args.port_offset)
    if args.tls:
        try:
            ensure_certificates(Path(args.data_dir) / "tls", [m["id"] for m in members])
        except certs.CertsError as exc:
            print(f"raftd cluster: {exc}", file=sys.stderr)
            return 1
    # Signals are handled inside _run; outside it (and when trio re-delivers signals still
    # queued as the receiver closes) they must not turn into a KeyboardInterrupt traceback.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    return trio.run(_run, members, args)


async def _run(members: list[dict[str, str]], args: argparse.Namespace) -> int:
    cluster = ",".join(f"{m['id']}={m['peer']}" for m in members)
    print(f"{'member':<8}{'clients':<18}{'peers':<18}{'metrics':<18}data")
    for m in members:
        print(f"{m['id']:<8}{m['client']:<18}{m['peer']:<18}{m['metrics']:<18}{m['data_dir']}")
    endpoints = ",".join(m["client"] for m in members)
    tls_dir = Path(args.data_dir) / "tls" if args.tls else None
    flags = ""
    if tls_dir is not None:
        env = raftctl_tls_env(tls_dir)
        flags = (
            f" --cacert {env['RAFTCTL_CACERT']} --cert {env['RAFTCTL_CERT']}"
            f" --key {env['RAFTCTL_KEY']}"
        )
    print(f"\nraftctl --endpoints {endpoints}{flags} status     (Ctrl-C stops every member)\n")
    sys.stdout.flush()
    async with trio.open_nursery() as nursery:
        processes = []
        for m in members:
            process = await trio.lowlevel.open_process(
                member_command(m, cluster, forward=args.forward, tls_dir=tls_dir),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            processes.append(process)
            nursery.start_soon(_relay_output, m["id"], process)
        if args.demo:
            trace_file = Path(args.data_dir) / "raftctl" / "traces.jsonl"
            trace_file.parent.mkdir(parents=True, exist_ok=True)
            nursery.start_soon(_demo, endpoints, trace_file, raftctl_tls_env(tls_dir))
        # The receiver stays open while the members stop, so a second Ctrl-C (terminals send
        # it to the whole process group) cannot interrupt the shutdown half-way.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            try:
                async for _ in signals:
                    break
            finally:
                with trio.CancelScope(shield=True):
                    await _stop_all(processes)
                nursery.cancel_scope.cancel()
    return 0


async def _relay_output(name: str, process: trio.Process) -> None:
    assert process.stdout is not None
    buffer = b""
    async for chunk in process.stdout:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            print(f"{name} | {line.decode(errors='replace')}", flush=True)
    status = await process.wait()
    print(f"{name} | exited with status {status}", flush=True)


async def _stop_all(processes: list[trio.Process]) -> None:
    # SIGINT, not SIGTERM: the whole cluster stops, so a leader need not hand over first.
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
    with trio.move_on_after(STOP_GRACE_S):
        for process in processes:
            await process.wait()
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _raftctl(
    endpoints: str,
    trace_file: Path,
    *command: str,
    show: bool = True,
    tls_env: dict[str, str] | None = None,
) -> tuple[int, str]:
    argv = [sys.executable, "-m", "cli", "--endpoints", endpoints, *command]
    # raftctl's spans land beside the members' traces, so one trace file tree holds
    # every span of a demo write, from the client to each member.
    env = {**os.environ, **(tls_env or {}), "RAFTCTL_TRACE_FILE": str(trace_file)}
    result = await trio.run_process(
        argv, capture_stdout=True, capture_stderr=True, check=False, env=env
    )
    out = (result.stdout + result.stderr).decode(errors="replace").rstrip()
    if show:
        print(f"\n$ raftctl {' '.join(command)}\n{out}\n(exit status {result.returncode})")
    return result.returncode, out


async def _demo(endpoints: str, trace_file: Path, tls_env: dict[str, str]) -> None:
    """A short scripted session: the contract's commands, against the live cluster."""
    with trio.move_on_after(READY_TIMEOUT_S):
        while True:
            status, out = await _raftctl(
                endpoints, trace_file, "--output", "json", "status", show=False, tls_env=tls_env
            )
            members = json.loads(out).get("members", []) if status == 0 else []
            if any(m.get("role") == "leader" for m in members):
                break
            await trio.sleep(0.2)
    print("\n== demo: raftctl against the running cluster", flush=True)
    follower = endpoints.split(",")[-1]
    for command in (
        ("set", "greeting", "hello"),
        ("get", "greeting"),
        ("cas", "greeting", "hello", "bonjour"),
        ("cas", "greeting", "hello", "hola"),
        ("--endpoints", follower, "get", "greeting", "--max-staleness", "1"),
        ("status",),
    ):
        await _raftctl(endpoints, trace_file, *command, tls_env=tls_env)
    print("\n== the cluster keeps running; Ctrl-C stops it", flush=True)
