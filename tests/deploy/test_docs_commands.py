"""The hand-run deployments of docs/deploy.md, checked as tests/deploy/test_kubernetes.py
checks the Kubernetes member's command: the systemd unit (its environment and ExecStart),
the replacement of a failed host, and the docker run command, each parsed by raftd's own
argument parser (and raftctl's), with the environment the unit gives it."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from cli.raftctl import _check_member
from cli.raftctl import build_parser as raftctl_parser
from raftd.config import Address, NodeConfig
from raftd.main import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "deploy.md"
THREE = {"db1": Address("db1", 7101), "db2": Address("db2", 7102), "db3": Address("db3", 7103)}


def blocks() -> list[str]:
    """The fenced code blocks of docs/deploy.md, in order."""
    return re.findall(r"^```[a-z]*\n(.*?)^```", DOCS.read_text(), re.M | re.S)


def block(starting: str) -> str:
    (found,) = [b for b in blocks() if b.lstrip().startswith(starting)]
    return found


def raftd_config(
    command: str, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> NodeConfig:
    """``raftd run ...`` (``command`` from its ``run`` on) as raftd reads it with
    ``environ`` and nothing else of RAFTD_ in the environment."""
    for name in [n for n in os.environ if n.startswith("RAFTD_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    words = shlex.split(command)
    return config_from_args(build_parser().parse_args(words[words.index("run") :]), environ)


def assignments(lines: list[str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines)


def test_the_systemd_unit_and_its_member_env_make_a_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unit = block("# /etc/systemd/system/raftd.service")
    settings = [line.split("=", 1) for line in unit.splitlines() if "=" in line]
    environment = assignments([value for key, value in settings if key == "Environment"])
    assert dict(settings)["EnvironmentFile"] == "/etc/raftd/member.env"
    member_env = assignments(block("RAFTD_ID=db1").split())
    exec_start = dict(settings)["ExecStart"]
    config = raftd_config(exec_start, {**environment, **member_env}, monkeypatch)
    assert config.name == "db1" and config.members == THREE
    assert config.client_addr == Address("db1", 7001)
    assert config.data_dir == Path("/var/lib/raftd")
    assert config.metrics_addr == Address("0.0.0.0", 9100)
    # Exit 2 is raftd's configuration error (its --help says so): systemd must not loop on it.
    assert dict(settings)["RestartPreventExitStatus"] == "2"
    assert "2 configuration error" in build_parser().format_help()
    # And the status command shown after it reaches the three client ports.
    text = DOCS.read_text()
    assert "raftctl --endpoints db1:7001,db2:7002,db3:7003 status" in text


def test_replacing_a_failed_host_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = [line for line in block("raftctl member remove db3").splitlines() if line[:1] != "#"]
    raftctl = [
        raftctl_parser().parse_args(shlex.split(s, comments=True)[1:])
        for s in steps
        if "raftctl" in s
    ]
    for args in raftctl:
        _check_member(args)
    assert [(a.action, a.name) for a in raftctl] == [
        ("remove", "db3"),
        ("add", "db4"),
        ("promote", "db4"),
    ]
    added = raftctl[1]
    (start,) = [s for s in steps if " raftd run " in f" {s}"]
    words = shlex.split(start)
    environ = assignments([w for w in words[: words.index("raftd")]])
    config = raftd_config(start, environ, monkeypatch)
    assert config.name == "db4" and config.join
    assert config.members == {"db1": THREE["db1"], "db2": THREE["db2"], "db4": Address("db4", 7104)}
    assert str(config.members["db4"]) == added.peer_addr
    assert str(config.client_addr) == added.client_addr


def test_the_docker_run_command_makes_a_member(monkeypatch: pytest.MonkeyPatch) -> None:
    command = block("docker run").replace("\\\n", " ")
    words = shlex.split(command)
    image = words.index("raftd:local")
    assert words[image + 1 : image + 3] == ["raftd", "run"]
    config = raftd_config(shlex.join(words[image + 1 :]), {}, monkeypatch)
    assert config.name == "db1" and config.members == THREE
    assert config.client_addr == Address("db1", 7001) and config.forward
    volume = words[words.index("-v") + 1]
    assert volume.split(":")[1] == str(config.data_dir)  # the data is on the named volume
    assert words[words.index("--network") + 1] == "host"  # it listens on the host's address


def test_the_tls_overlay_names_the_hosts_the_docs_give_raftd_certs() -> None:
    command = block("raftd certs").replace("\\\n", " ").splitlines()[0]
    args = build_parser().parse_args(shlex.split(command)[1:])
    hosts = args.hosts
    assert "*" not in hosts
    overlay = ROOT / "deploy" / "kubernetes" / "overlays" / "tls" / "kustomization.yaml"
    comment = " ".join(
        line.lstrip("# ") for line in overlay.read_text().splitlines() if line.startswith("#")
    )
    assert f"--hosts {hosts}" in comment
    assert "'*" not in comment
