"""observability/collector/config.yaml: the OpenTelemetry Collector of the compose stack.

No collector binary here, so the structure is checked: every component a pipeline names is
configured and every configured one is used, the tail-sampling policies keep what they
promise using attributes raftd really emits, and the Honeycomb key only ever comes from the
environment that docker-compose.yml passes in.
"""

from __future__ import annotations

import re
from typing import Any, cast

import pytest
import yaml

from tests.observability.test_compose import (
    ROOT,
    environment,
    load_compose,
    mounted_host_path,
    service,
)

CONFIG = ROOT / "observability/collector/config.yaml"
SOURCES = [ROOT / "raftd/runtime/spans.py", ROOT / "raftd/runtime/clients.py"]

# Component types of the contrib distribution this file may use (the part before "/").
KNOWN = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter", "tail_sampling"},
    "exporters": {"otlp"},
}
# Policy types of the contrib tail_sampling processor.
POLICY_TYPES = {
    "always_sample",
    "latency",
    "numeric_attribute",
    "probabilistic",
    "status_code",
    "string_attribute",
    "rate_limiting",
    "span_count",
    "trace_state",
    "boolean_attribute",
    "ottl_condition",
    "and",
    "composite",
    "drop",
}
ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Doc = dict[str, Any]


def load_config() -> Doc:
    doc = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return cast(Doc, doc)


def resolve(value: str) -> str:
    """An env reference with a default, as the collector resolves it with the variable unset."""
    return ENV_REFERENCE.sub(lambda m: m.group(2) or "", value)


def policies() -> dict[str, Doc]:
    tail = load_config()["processors"]["tail_sampling"]
    return {policy["name"]: policy for policy in tail["policies"]}


def source_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in SOURCES)


def test_otlp_receiver_listens_on_both_protocols_in_the_container() -> None:
    protocols = load_config()["receivers"]["otlp"]["protocols"]
    # The collector's default is localhost, which nothing outside its container reaches.
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_pipelines_reference_only_configured_components_and_use_them_all() -> None:
    config = load_config()
    pipelines = config["service"]["pipelines"]
    assert "traces" in pipelines
    used: dict[str, set[str]] = {kind: set() for kind in KNOWN}
    for name, pipeline in pipelines.items():
        assert name.split("/")[0] == "traces", name
        for kind in KNOWN:
            names = pipeline.get(kind, [])
            if kind != "processors":
                assert names, f"{name} has no {kind}"
            for component in names:
                assert component in (config.get(kind) or {}), f"{name}: no {kind} {component}"
            used[kind] |= set(names)
    for kind, known in KNOWN.items():
        configured = set(config.get(kind) or {})
        assert configured == used[kind], f"{kind} configured but unused: {configured - used[kind]}"
        for component in configured:
            assert component.split("/")[0] in known, component


def test_processor_order() -> None:
    pipelines = load_config()["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name
    # Tail sampling sees whole traces, so it runs before batching splits them.
    assert pipelines["traces"]["processors"].index("tail_sampling") < pipelines["traces"][
        "processors"
    ].index("batch")


def test_honeycomb_gets_tail_sampled_traces_and_jaeger_gets_everything() -> None:
    pipelines = load_config()["service"]["pipelines"]
    for pipeline in pipelines.values():
        if "otlp/honeycomb" in pipeline["exporters"]:
            assert "tail_sampling" in pipeline["processors"]
    jaeger = [p for p in pipelines.values() if "otlp/jaeger" in p["exporters"]]
    assert jaeger and all("tail_sampling" not in p["processors"] for p in jaeger)


def test_tail_sampling_policies() -> None:
    found = policies()
    assert all(p["type"] in POLICY_TYPES for p in found.values()), found
    assert all(p["type"] in p for p in found.values()), "each policy's settings under its type"

    errors = [p for p in found.values() if p["type"] == "status_code"]
    assert errors and errors[0]["status_code"]["status_codes"] == ["ERROR"]

    slow = [p for p in found.values() if p["type"] == "latency"]
    assert slow and slow[0]["latency"]["threshold_ms"] == 250

    elections = [
        p
        for p in found.values()
        if p["type"] == "string_attribute"
        and p["string_attribute"]["key"] == "raft.election.outcome"
    ]
    assert elections, "no policy keeps elections"
    emitted = set(re.findall(r'_end_election\(\s*"(\w+)"', source_text()))
    assert emitted == {"won", "lost", "split", "superseded"}
    assert set(elections[0]["string_attribute"]["values"]) == emitted

    rest = [p for p in found.values() if p["type"] == "probabilistic"]
    assert rest and 0 < rest[0]["probabilistic"]["sampling_percentage"] <= 10


def test_policies_use_attributes_raftd_emits() -> None:
    text = source_text()
    for policy in policies().values():
        if policy["type"] == "string_attribute":
            key = policy["string_attribute"]["key"]
            assert f'"{key}"' in text, f"{policy['name']}: raftd never sets {key}"
    failures = policies()["client-failures"]["string_attribute"]
    assert failures["key"] == "raftd.outcome"
    # The outcomes that leave a client without a definite answer, as clients.py names them.
    for outcome in failures["values"]:
        assert f'return "{outcome}"' in text, outcome


def test_a_trace_stays_long_enough_for_its_slowest_spans() -> None:
    decision_wait = load_config()["processors"]["tail_sampling"]["decision_wait"]
    assert re.fullmatch(r"\d+s", decision_wait)
    assert 5 <= int(decision_wait[:-1]) <= 30


def test_honeycomb_exporter() -> None:
    exporter = load_config()["exporters"]["otlp/honeycomb"]
    assert resolve(exporter["endpoint"]) == "api.honeycomb.io:443"
    headers = exporter["headers"]
    assert headers["x-honeycomb-team"] == "${env:HONEYCOMB_API_KEY}"
    for name, value in headers.items():
        assert ENV_REFERENCE.fullmatch(value), f"header {name} is a literal: {value!r}"
    assert exporter.get("tls", {}).get("insecure") is not True


@pytest.mark.parametrize(
    "secret",
    [
        re.compile(r"\b[0-9a-f]{32}\b"),  # a Honeycomb Classic key
        re.compile(r"\bhc[a-z]{2,4}_[0-9a-z]{20,}", re.I),  # newer Honeycomb key formats
        re.compile(r"x-honeycomb-team:\s*(?!\$\{env:)\S+", re.I),  # anything but an env reference
    ],
    ids=["classic-key", "new-key", "header-literal"],
)
def test_no_api_key_in_the_file(secret: re.Pattern[str]) -> None:
    assert not secret.search(CONFIG.read_text(encoding="utf-8"))


def test_every_environment_variable_comes_from_compose() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    collector_env = environment(service(load_compose(), "collector"))
    for match in ENV_REFERENCE.finditer(text):
        name, default = match.group(1), match.group(2)
        assert name in collector_env, f"compose does not pass {name} to the collector"
        # Compose's default and the config's must agree, or the file means two things.
        if default is not None:
            assert collector_env[name] == f"${{{name}:-{default}}}", name
    assert collector_env["HONEYCOMB_API_KEY"] == "${HONEYCOMB_API_KEY:-}"


def test_jaeger_exporter_reaches_the_jaeger_service() -> None:
    exporter = load_config()["exporters"]["otlp/jaeger"]
    host, port = exporter["endpoint"].rsplit(":", 1)
    assert (host, port) == ("jaeger", "4317")
    assert exporter["tls"]["insecure"] is True
    compose = load_compose()
    assert environment(service(compose, "jaeger"))["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "jaeger" in service(compose, "collector")["depends_on"]


def test_this_is_the_file_the_collector_reads() -> None:
    collector = service(load_compose(), "collector")
    flag = next(arg for arg in collector["command"] if arg.startswith("--config="))
    assert mounted_host_path(collector, flag.removeprefix("--config=")) == CONFIG
