"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine.

The compose file is validated against the Compose Specification's own JSON schema, as
shipped by the check-jsonschema package (a dev dependency; nothing is fetched at test
time), before and after variable interpolation. Then what a schema cannot know: the
members' commands are the README's, parse with raftd's own parser and agree with each
other, chaos settings from the shell reach raftd's chaos parser intact, spans go to the
collector, and every file mounted into a container exists and fits what mounts it.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from observability.health import Health
from observability.metrics import RaftMetrics, serve_metrics
from observability.tracing import choose_exporter
from raftd.config import Address, ConfigError, NodeConfig
from raftd.main import build_parser, config_from_args
from raftd.runtime.chaos import ENV_VARS as CHAOS_ENV_VARS
from raftd.runtime.chaos import ChaosConfig

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"
README_SECTION = "## Running on several machines: docker-compose"

SCHEMA_PACKAGE = "check_jsonschema.builtin_schemas.vendor"
SCHEMA_FILE = "compose-spec.json"

MEMBERS = ("n1", "n2", "n3")
SERVICES = {*MEMBERS, "demo", "collector", "jaeger", "prometheus", "grafana"}
OTLP_HTTP_ENDPOINT = "http://collector:4318"

Doc = dict[str, Any]


# ------------------------------------------------------------------ helpers


_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<sep>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
    ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``. A ``$`` starting none of these
    is an error, as in ``docker compose config`` (write ``$$`` for a literal ``$``)."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return environ.get(match.group("named"), "")
        name = match.group("braced")
        if name is None:
            raise ValueError(f"invalid interpolation in {value!r} at {match.start()}")
        sep, arg = match.group("sep"), match.group("arg") or ""
        current = environ.get(name)
        missing = current is None or (current == "" and sep is not None and sep[0] == ":")
        if sep is None or not missing:
            return current or ""
        if sep.endswith("-"):
            return arg
        raise ValueError(f"{name} is required: {arg}")

    return _INTERPOLATION.sub(replace, value)


def interpolated(node: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, list):
        return [interpolated(item, environ) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(value, environ) for key, value in node.items()}
    return node


def load_compose() -> Doc:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return cast(Doc, doc)


def resolved_compose(environ: Mapping[str, str] | None = None) -> Doc:
    """The compose file as `docker compose` would run it from a shell with ``environ``."""
    return cast(Doc, interpolated(load_compose(), environ or {}))


def service(doc: Doc, name: str) -> Doc:
    return cast(Doc, doc["services"][name])


def environment(svc: Doc) -> dict[str, str]:
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def bind_mounts(svc: Doc) -> list[tuple[Path, str]]:
    """(host path, container path) of each bind mount written ./relative:/target[:mode]."""
    mounts = []
    for volume in svc.get("volumes", []):
        assert isinstance(volume, str), f"use the short volume syntax: {volume!r}"
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((COMPOSE_FILE.parent / source).resolve(), target))
    return mounts


def container_path(svc: Doc, host_path: Path) -> str | None:
    """Where ``host_path`` appears inside the container, through the service's bind mounts."""
    host_path = host_path.resolve()
    for source, target in bind_mounts(svc):
        if host_path == source:
            return target
        if source in host_path.parents:
            return target.rstrip("/") + "/" + host_path.relative_to(source).as_posix()
    return None


def mounted_host_path(svc: Doc, path_in_container: str) -> Path | None:
    """Which file of the repository a path inside the container shows, if any."""
    for source, target in bind_mounts(svc):
        target = target.rstrip("/")
        if path_in_container == target:
            return source
        if path_in_container.startswith(target + "/"):
            return source / path_in_container[len(target) + 1 :]
    return None


@cache
def compose_schema() -> dict[str, Any]:
    resource = importlib.resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE)
    return cast(dict[str, Any], json.loads(resource.read_text(encoding="utf-8")))


def schema_errors(doc: Doc) -> list[str]:
    schema = compose_schema()
    cls: type[Validator] = validator_for(schema, default=Draft202012Validator)
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]


def readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    headings = [m.start() for m in re.finditer(r"^## ", text, flags=re.M)]
    start = text.find(README_SECTION + "\n")
    assert start >= 0, f"README.md has no section {README_SECTION!r}"
    later = [h for h in headings if h > start]
    return text[start : later[0] if later else len(text)]


def readme_member_commands() -> dict[str, list[str]]:
    """The ``raftd run`` lines of the section's code blocks, by --id."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", readme_section(), flags=re.M | re.S)
    commands: dict[str, list[str]] = {}
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("raftd run "):
                tokens = shlex.split(line)
                member = tokens[tokens.index("--id") + 1]
                assert member not in commands, f"README shows {member} twice"
                commands[member] = tokens
    return commands


def member_config(doc: Doc, name: str) -> NodeConfig:
    command = service(doc, name)["command"]
    assert command[:2] == ["raftd", "run"], command
    return config_from_args(build_parser().parse_args(command[1:]))


# ------------------------------------------------------------------ the schema


def test_the_schema_is_the_compose_specification() -> None:
    schema = compose_schema()
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]


@pytest.mark.parametrize("environ", [{}, {"RAFTD_CHAOS_DROP_PERCENT": "20"}], ids=repr)
def test_compose_file_is_valid_against_the_compose_spec_schema(environ: dict[str, str]) -> None:
    assert schema_errors(load_compose()) == []
    assert schema_errors(resolved_compose(environ)) == []


def test_the_schema_check_has_teeth() -> None:
    broken = load_compose()
    broken["services"]["n1"]["comand"] = broken["services"]["n1"].pop("command")
    broken["services"]["n2"]["ports"] = "7002:7002"
    errors = schema_errors(broken)
    assert any(e.startswith("services/n1") and "comand" in e for e in errors), errors
    assert any(e.startswith("services/n2/ports") for e in errors), errors


# What the compose file reads from the shell that runs it; anything else is a shell
# variable missing its "$$" (compose would replace "$i" with "" and warn).
SHELL_VARIABLES = {
    *CHAOS_ENV_VARS,
    "RAFTD_TRACE_SAMPLE_RATIO",
    "RAFTD_TRACES_PER_MINUTE",
    "HONEYCOMB_API_KEY",
    "HONEYCOMB_DATASET",
    "HONEYCOMB_OTLP_ENDPOINT",
}


def test_every_dollar_is_an_interpolation_or_escaped() -> None:
    resolved_compose()  # raises on a bare "$" that docker compose would refuse
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    read = {m.group("braced") or m.group("named") for m in _INTERPOLATION.finditer(text)}
    assert read - {None} == SHELL_VARIABLES


def test_services() -> None:
    doc = load_compose()
    assert set(doc["services"]) == SERVICES
    for name in (*MEMBERS, "demo"):
        svc = service(doc, name)
        assert svc["build"] == ".", name
        assert svc["image"] == "raftd:local", name
    for name in SERVICES - {*MEMBERS, "demo"}:
        image = service(doc, name)["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+(\.\d+)+", image), f"{name}: pin a version: {image}"


def test_named_volumes_are_declared_and_used() -> None:
    doc = load_compose()
    used = {
        volume.split(":")[0]
        for svc in doc["services"].values()
        for volume in svc.get("volumes", [])
        if not volume.startswith((".", "/"))
    }
    assert used == set(doc["volumes"])
    for name in MEMBERS:
        assert f"{name}-data:/data" in service(doc, name)["volumes"]


def test_published_ports_listen_on_loopback_only() -> None:
    for name, svc in load_compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


# ------------------------------------------------------------------ the members


def test_member_commands_are_the_readme_commands() -> None:
    shown = readme_member_commands()
    assert set(shown) == set(MEMBERS), "README's compose section shows one line per member"
    doc = load_compose()
    for name in MEMBERS:
        assert service(doc, name)["command"] == shown[name], name


def test_members_agree_on_the_cluster_and_bind_their_own_names() -> None:
    doc = load_compose()
    configs = {name: member_config(doc, name) for name in MEMBERS}
    clusters = {name: config.members for name, config in configs.items()}
    assert all(members == clusters["n1"] for members in clusters.values())
    for name, config in configs.items():
        assert config.name == name
        assert set(config.members) == set(MEMBERS)
        # Peers dial each other by service name; a member binds its own entry.
        assert all(clusters["n1"][member].host == member for member in MEMBERS)
        # The client address is advertised to clients and other members (redirects,
        # forwarding): it must name the container, never a wildcard.
        assert config.client_addr.host == name
        assert config.forward, "clients outside the compose network need --forward"
        assert str(config.data_dir) == "/data"
        assert config.metrics_addr is not None
        assert config.metrics_addr.host == "0.0.0.0"
        ports = service(doc, name)["ports"]
        assert f"127.0.0.1:{config.client_addr.port}:{config.client_addr.port}" in ports
        assert f"127.0.0.1:{config.metrics_addr.port}:{config.metrics_addr.port}" in ports
    used = [
        port
        for c in configs.values()
        for port in (c.client_addr.port, c.peer_addr.port, c.metrics_addr and c.metrics_addr.port)
    ]
    assert len(set(used)) == len(used) == 3 * len(MEMBERS)


def test_chaos_variables_pass_through_from_the_shell() -> None:
    doc = load_compose()
    for name in MEMBERS:
        env = environment(service(doc, name))
        for variable in CHAOS_ENV_VARS:
            assert variable in env, f"{name} does not pass {variable}"
            assert re.fullmatch(rf"\$\{{{variable}(:-[^}}]*)?\}}", env[variable]), env[variable]


CHAOS_CASES: list[tuple[dict[str, str], ChaosConfig]] = [
    ({}, ChaosConfig()),
    ({"RAFTD_CHAOS_DROP_PERCENT": "20"}, ChaosConfig(drop_percent=20.0)),
    (
        {"RAFTD_CHAOS_DELAY_PERCENT": "30", "RAFTD_CHAOS_DELAY_MS": "20-200"},
        ChaosConfig(delay_percent=30.0, delay_ms=(20.0, 200.0)),
    ),
    (
        {
            "RAFTD_CHAOS_DROP_PERCENT": "5",
            "RAFTD_CHAOS_DELAY_PERCENT": "10",
            "RAFTD_CHAOS_DELAY_MS": "50",
            "RAFTD_CHAOS_FSYNC_DELAY_MS": "5-15",
            "RAFTD_CHAOS_FSYNC_FAIL_PERCENT": "0.5",
            "RAFTD_CHAOS_SEED": "42",
        },
        ChaosConfig(
            drop_percent=5.0,
            delay_percent=10.0,
            delay_ms=(50.0, 50.0),
            fsync_delay_ms=(5.0, 15.0),
            fsync_fail_percent=0.5,
            seed=42,
        ),
    ),
]


@pytest.mark.parametrize(("shell", "expected"), CHAOS_CASES, ids=lambda c: repr(c)[:60])
def test_the_compose_chaos_defaults_parse(shell: dict[str, str], expected: ChaosConfig) -> None:
    doc = resolved_compose(shell)
    for name in MEMBERS:
        assert ChaosConfig.from_env(environment(service(doc, name))) == expected, name
    if not shell:
        assert not expected.enabled


@pytest.mark.parametrize("half", ["RAFTD_CHAOS_DELAY_PERCENT", "RAFTD_CHAOS_DELAY_MS"])
def test_half_a_delay_setting_is_still_refused_through_compose(half: str) -> None:
    # A "0" default for the other half would make this a silent no-op instead.
    doc = resolved_compose({half: "30"})
    with pytest.raises(ConfigError, match="message delay needs both"):
        ChaosConfig.from_env(environment(service(doc, "n1")))


def test_members_and_the_demo_send_spans_to_the_collector() -> None:
    doc = resolved_compose()
    for name in (*MEMBERS, "demo"):
        env = environment(service(doc, name))
        choice = choose_exporter(env)
        assert (choice.kind, choice.protocol, choice.endpoint) == (
            "otlp",
            "http/protobuf",
            OTLP_HTTP_ENDPOINT,
        ), name
        # The Honeycomb dataset is the service name: raftd for members, raftctl for clients.
        assert "OTEL_SERVICE_NAME" not in env
    collector = service(doc, "collector")
    assert "collector" in service(doc, "n1")["depends_on"]
    assert "127.0.0.1:4318:4318" in collector["ports"]


def test_member_healthchecks_ask_their_own_member_whether_it_is_ready() -> None:
    doc = resolved_compose()
    for name, config in ((n, member_config(doc, n)) for n in MEMBERS):
        test = service(doc, name)["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        assert config.metrics_addr is not None
        assert test[4] == f"http://127.0.0.1:{config.metrics_addr.port}/ready"


@pytest.mark.parametrize(("ready", "status"), [(None, 0), ("no leader known", 1)])
def test_the_healthcheck_command_fails_exactly_when_the_member_is_not_ready(
    ready: str | None, status: int
) -> None:
    """The check's Python, run for real against a member's metrics server."""
    server = serve_metrics(
        Address("127.0.0.1", 0), RaftMetrics(), Health(lambda: None, lambda: ready)
    )
    try:
        test = service(resolved_compose(), "n1")["healthcheck"]["test"]
        url = f"http://127.0.0.1:{server.port}/ready"
        done = subprocess.run(
            [sys.executable, "-c", test[3], url], capture_output=True, timeout=30, check=False
        )
        assert done.returncode == status, done.stderr
    finally:
        server.close()


# ------------------------------------------------------------------ the demo client


def demo_script() -> str:
    command = service(resolved_compose(), "demo")["command"]
    assert command[:2] == ["sh", "-c"], command
    return cast(str, command[2])


def test_demo_talks_to_every_member() -> None:
    doc = resolved_compose()
    demo = service(doc, "demo")
    endpoints = environment(demo)["RAFTCTL_ENDPOINTS"].split(",")
    assert endpoints == [str(member_config(doc, n).client_addr) for n in MEMBERS]
    assert set(demo["depends_on"]) == set(MEMBERS)
    assert all(dep["condition"] == "service_healthy" for dep in demo["depends_on"].values())


def test_demo_script_runs_raftctl_in_a_loop() -> None:
    script = demo_script()
    for operation in ("set", "get", "cas"):
        assert re.search(rf"^\s*raftctl {operation} ", script, flags=re.M), operation
    assert "while true" in script and "sleep 1" in script
    # Every raftctl call tolerates a failure: one unknown outcome must not end the demo.
    calls = re.findall(r"raftctl [^;\n]*", script)
    assert calls and all(call.rstrip().endswith("|| true") for call in calls), calls


def test_demo_script_is_valid_shell() -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.fail("no POSIX sh to check the demo script's syntax with")
    result = subprocess.run(
        [sh, "-n", "-c", demo_script()], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ mounted files


def test_every_mounted_file_exists() -> None:
    for name, svc in load_compose()["services"].items():
        for source, target in bind_mounts(svc):
            assert source.exists(), f"{name} mounts {source} (at {target}), which is missing"
            assert ROOT in source.parents, f"{name} mounts {source} from outside the repository"


def test_collector_reads_the_mounted_config() -> None:
    collector = service(load_compose(), "collector")
    config_flag = next(a for a in collector["command"] if a.startswith("--config="))
    mounted = mounted_host_path(collector, config_flag.removeprefix("--config="))
    assert mounted == ROOT / "observability/collector/config.yaml"


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yml", ".yaml"))


def test_prometheus_config_fits_the_compose_file() -> None:
    doc = load_compose()
    prometheus = service(doc, "prometheus")
    config_path = mounted_host_path(prometheus, "/etc/prometheus/prometheus.yml")
    assert config_path == ROOT / "observability/prometheus/prometheus-compose.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    # Rule files resolve against the config file's directory in the container.
    for rule_file in config.get("rule_files", []):
        in_container = rule_file if rule_file.startswith("/") else f"/etc/prometheus/{rule_file}"
        host = mounted_host_path(prometheus, in_container)
        assert host is not None and host.exists(), f"rule file {rule_file} is not mounted"
    targets = {
        target
        for job in config.get("scrape_configs", [])
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    }
    for name in MEMBERS:
        metrics = member_config(doc, name).metrics_addr
        assert metrics is not None
        assert f"{name}:{metrics.port}" in targets, f"Prometheus does not scrape {name}"


def test_grafana_provisioning_fits_the_compose_file() -> None:
    doc = load_compose()
    grafana = service(doc, "grafana")
    provisioning = mounted_host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning == ROOT / "observability/grafana/provisioning"
    datasources = [
        source
        for path in _yaml_files(provisioning / "datasources")
        for source in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(
            "datasources", []
        )
    ]
    prometheus = [s for s in datasources if s.get("uid") == "prometheus"]
    assert prometheus, "no datasource with uid 'prometheus'"
    assert prometheus[0]["url"].rstrip("/") == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in service(doc, "prometheus")["ports"]
    providers = [
        provider
        for path in _yaml_files(provisioning / "dashboards")
        for provider in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(
            "providers", []
        )
    ]
    assert providers, "no dashboard provider"
    for provider in providers:
        path = provider["options"]["path"]
        host = mounted_host_path(grafana, path)
        assert host is not None, f"the dashboard provider reads {path}, which nothing mounts"
        assert host.is_dir() and any(host.glob("*.json")), host
    assert container_path(grafana, ROOT / "observability/grafana/dashboards/raftd.json")
    env = environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Admin"


# ------------------------------------------------------------------ the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert froms == ["python:3.11-slim"]
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install \.(\s|$|&)", runs), "the image installs the project"
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"
    assert ("VOLUME", '["/data"]') in instructions
    cmds = [rest for keyword, rest in instructions if keyword == "CMD"]
    assert [json.loads(c) for c in cmds][-1] == ["raftd", "--help"]


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    include = re.search(r"\[tool\.setuptools\.packages\.find\]\s*include = \[(.*?)\]", pyproject)
    assert include is not None
    packages = {p.rstrip("*") for p in re.findall(r'"([^"]+)"', include.group(1))}
    copied = {
        source.rstrip("/")
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY"
        for source in rest.split()[:-1]  # the last word is the destination
    }
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    assert {"pyproject.toml", "README.md"} <= copied


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".git", ".raftd", ".mypy_cache", ".pytest_cache", ".ruff_cache"):
        assert required in patterns, required
    assert "**/__pycache__" in patterns
    # What the image needs must not be ignored.
    for needed in ("pyproject.toml", "README.md", "raftd", "wire", "cli", "observability"):
        assert needed not in patterns, needed


# ------------------------------------------------------------------ with TLS

TLS_OVERRIDE = ROOT / "docker-compose.tls.yml"


def load_tls_override() -> Doc:
    return cast(Doc, yaml.safe_load(TLS_OVERRIDE.read_text(encoding="utf-8")))


def merged(base: Doc, override: Doc) -> Doc:
    """Compose's merge of ``-f base -f override``, as far as these files need it: maps
    merge key by key, lists of volumes add up, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        elif key == "volumes" and isinstance(value, list):
            out[key] = [*out.get(key, []), *value]
        else:
            out[key] = value
    return out


def test_the_tls_override_is_valid_alone_and_merged() -> None:
    assert schema_errors(load_tls_override()) == []
    assert schema_errors(merged(resolved_compose(), load_tls_override())) == []


def test_with_tls_every_member_runs_mutual_tls_on_the_files_raftd_certs_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    override = load_tls_override()
    script = service(override, "certs")["command"][2]
    line = next(part for part in script.split("\n") if "raftd certs" in part)
    certs_args = build_parser().parse_args(shlex.split(line.strip().rstrip("&").strip())[1:])
    assert set(certs_args.members.split(",")) == set(MEMBERS)
    out = Path(certs_args.out)
    doc = merged(resolved_compose(), override)
    for name in MEMBERS:
        svc = service(doc, name)
        assert "certs:/certs:ro" in svc["volumes"] and svc["depends_on"]["certs"]
        for variable, value in environment(svc).items():
            monkeypatch.setenv(variable, value)  # raftd run reads RAFTD_* as flag defaults
        config = member_config(doc, name)
        member_files = (out / f"{name}.pem", out / f"{name}-key.pem", out / "ca.pem")
        assert config.tls.peer is not None and config.tls.client is not None
        assert (config.tls.peer.cert, config.tls.peer.key, config.tls.peer.ca) == member_files
        assert (config.tls.client.cert, config.tls.client.key) == member_files[:2]
        assert config.tls.client.ca == out / "ca.pem"  # client certificates required
        monkeypatch.undo()
    for name in (*MEMBERS, "demo"):  # raftctl in any of them reaches the members
        env = environment(service(doc, name))
        assert env["RAFTCTL_CACERT"] == str(out / "ca.pem")
        assert (env["RAFTCTL_CERT"], env["RAFTCTL_KEY"]) == (
            str(out / "client.pem"),
            str(out / "client-key.pem"),
        )
    assert "certs" in doc["volumes"]
