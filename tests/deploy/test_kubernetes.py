"""deploy/kubernetes, checked without a cluster: every manifest against the Kubernetes
schemas (kubernetes-validate, offline), the pieces agreeing with each other, and the start
script run for real with stand-ins for raftd and raftctl, its command parsed by raftd's own
parser and compared with the one docs/deploy.md and the README show."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml

from raftd.config import NodeConfig
from raftd.main import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"
INITIAL = ["raftd-0", "raftd-1", "raftd-2"]

Doc = dict[str, Any]


def documents(path: Path) -> list[Doc]:
    return [cast(Doc, d) for d in yaml.safe_load_all(path.read_text()) if d]


def base() -> dict[str, Doc]:
    """The base's resources by kind (Service by name)."""
    kustomization = documents(DEPLOY / "kustomization.yaml")[0]
    found: dict[str, Doc] = {}
    for resource in kustomization["resources"]:
        for doc in documents(DEPLOY / resource):
            key = doc["kind"] if doc["kind"] != "Service" else f"Service/{doc['metadata']['name']}"
            found[key] = doc
    return found


def container(statefulset: Doc) -> Doc:
    (only,) = statefulset["spec"]["template"]["spec"]["containers"]
    return cast(Doc, only)


def with_tls(statefulset: Doc) -> Doc:
    """The StatefulSet after the TLS overlay's patch, merged as kustomize would (lists of
    named items added by name)."""
    patch = documents(DEPLOY / "overlays" / "tls" / "tls.yaml")[0]
    merged = yaml.safe_load(yaml.safe_dump(statefulset))
    extra = container(patch)
    target = container(merged)
    for field in ("env", "volumeMounts"):
        target[field] = [*target.get(field, []), *extra.get(field, [])]
    pod = merged["spec"]["template"]["spec"]
    pod["volumes"] = [*pod.get("volumes", []), *patch["spec"]["template"]["spec"]["volumes"]]
    return cast(Doc, merged)


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    resources = base()
    assert set(resources) == {
        "Service/raftd", "Service/raftd-client", "StatefulSet", "PodDisruptionBudget",
    }  # fmt: skip
    for doc in [*resources.values(), with_tls(resources["StatefulSet"])]:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_schema_check_has_teeth() -> None:
    broken = base()["StatefulSet"]
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_pieces_fit_together() -> None:
    resources = base()
    statefulset = resources["StatefulSet"]
    headless = resources["Service/raftd"]
    spec = statefulset["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    # Members must find each other before any is ready: no leader, no readiness.
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert spec["podManagementPolicy"] == "Parallel"
    for doc in (headless, resources["Service/raftd-client"], resources["PodDisruptionBudget"]):
        assert doc["spec"]["selector"].get("matchLabels", doc["spec"]["selector"]) == labels
    assert resources["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    raftd = container(statefulset)
    ports = {p["name"]: p["containerPort"] for p in raftd["ports"]}
    assert raftd["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert raftd["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert raftd["resources"]["requests"] and raftd["resources"]["limits"]["memory"]
    config = member_config("raftd-0")
    assert config.metrics_addr is not None and config.metrics_addr.port == ports["metrics"]
    assert config.client_addr.port == ports["client"]
    assert config.peer_addr.port == ports["peer"]
    claim = spec["volumeClaimTemplates"][0]["metadata"]["name"]
    assert {"name": claim, "mountPath": str(config.data_dir)} in raftd["volumeMounts"]
    env = {e["name"]: e.get("value") for e in raftd["env"]}
    assert env["RAFTD_INITIAL_MEMBERS"] == str(spec["replicas"])


# ------------------------------------------------------------------ start.sh, for real


# raftctl as start.sh meets it: `status` of the other initial members answers with a log
# only when a cluster exists; `member list` lists the pod once `member add` has run.
RAFTCTL_STUB = """#!/bin/sh
printf '%s\\n' "raftctl $*" >> "$RECORD"
case "$*" in
  *" status") [ -n "$CLUSTER_EXISTS" ] && echo '{"members": [{"last_index": 12}]}' && exit 0
              exit 3 ;;
  *"member add"*) touch "$STATE/added" ;;
  *"member list") echo "NAME ID ROLE"
                  [ -e "$STATE/added" ] && echo "$POD_NAME  4  learner  x:7101  x:7001" ;;
esac
exit 0
"""


def start(
    pod: str, tmp_path: Path, *, joined: bool = False, cluster_exists: bool = False
) -> tuple[list[str], list[str]]:
    """Run start.sh as pod ``pod`` would, with stand-ins for raftd, raftctl and python that
    record their arguments: what raftd was started with, and every raftctl call."""
    bin_dir, data = tmp_path / "bin", tmp_path / "data"
    bin_dir.mkdir(parents=True)
    data.mkdir()
    if joined:
        (data / "member.json").write_text("{}")
    record = tmp_path / "calls"
    stubs = {
        "raftd": '#!/bin/sh\nprintf "%s\\n" "raftd $*" >> "$RECORD"\n',
        "python": "#!/bin/sh\nexit 0\n",  # the pod's name resolves
        "raftctl": RAFTCTL_STUB,
    }
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "POD_NAME": pod,
        "RAFTD_DATA_DIR": str(data),
        "RAFTD_SERVICE": "raftd",
        "RAFTD_CLIENT_SERVICE": "raftd-client",
        "RECORD": str(record),
        "STATE": str(tmp_path),
        "CLUSTER_EXISTS": "yes" if cluster_exists else "",
    }
    done = subprocess.run(
        ["sh", str(DEPLOY / "start.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    calls = record.read_text().splitlines()
    raftd = [c for c in calls if c.startswith("raftd ")]
    assert len(raftd) == 1, calls
    return shlex.split(raftd[0])[1:], [c for c in calls if c.startswith("raftctl ")]


def member_config(pod: str) -> NodeConfig:
    return config_from_args(build_parser().parse_args(shlex.split(started_command(pod))[1:]))


def started_command(pod: str) -> str:
    """The member's command as the documentation shows it (data in /data)."""
    return (
        f"raftd run --id {pod} --cluster "
        + ",".join(f"{m}={m}.raftd:7101" for m in INITIAL)
        + f" --client-addr 0.0.0.0:7001 --advertise-client-addr {pod}.raftd:7001"
        " --data-dir /data --metrics-addr 0.0.0.0:9100 --forward"
    )


def test_an_initial_member_starts_with_the_documented_command(tmp_path: Path) -> None:
    args, raftctl = start("raftd-0", tmp_path)
    # It asked the other initial members whether a cluster exists; none has a log.
    assert raftctl == [
        "raftctl --endpoints raftd-1.raftd:7001,raftd-2.raftd:7001 --timeout 3 --output json status"
    ]
    shown = shlex.split(started_command("raftd-0"))[1:]
    assert args == [a if a != "/data" else str(tmp_path / "data") for a in shown]
    for document in (ROOT / "docs" / "deploy.md", ROOT / "README.md"):
        assert started_command("raftd-0") in document.read_text(), document


ADD = (
    "raftctl --endpoints raftd-client:7001 --timeout 5 member add {pod} --peer-addr "
    "{pod}.raftd:7101 --client-addr {pod}.raftd:7001 --learner"
)


def test_a_member_beyond_the_initial_ones_asks_to_be_added_and_joins(tmp_path: Path) -> None:
    args, raftctl = start("raftd-3", tmp_path)
    assert ADD.format(pod="raftd-3") in raftctl
    # And from the background, once the leader accepts, it promotes itself.
    assert "raftctl --endpoints raftd-client:7001 --timeout 5 member promote raftd-3" in raftctl
    config = config_from_args(build_parser().parse_args(["run", *args[1:]]))
    assert config.join and config.name == "raftd-3"
    assert list(config.members) == [*INITIAL, "raftd-3"]
    # Restarted later, it has joined: nothing asked, no --join.
    again, asked = start("raftd-3", tmp_path / "restarted", joined=True)
    assert "--join" not in again and asked == []


def test_an_initial_member_with_a_lost_volume_joins_instead_of_bootstrapping(
    tmp_path: Path,
) -> None:
    """Bootstrapping it again would let it vote as if it had promised nothing."""
    args, raftctl = start("raftd-1", tmp_path, cluster_exists=True)
    assert ADD.format(pod="raftd-1") in raftctl
    assert "--join" in args


def test_the_tls_overlay_gives_each_member_its_own_certificate() -> None:
    env = {e["name"]: e.get("value") for e in container(with_tls(base()["StatefulSet"]))["env"]}
    assert env["RAFTD_PEER_CERT"] == env["RAFTD_CLIENT_CERT"] == "/tls/$(POD_NAME).pem"
    assert env["RAFTD_PEER_CA"] == env["RAFTD_CLIENT_CA"] == env["RAFTCTL_CACERT"] == "/tls/ca.pem"
    names = [e["name"] for e in container(with_tls(base()["StatefulSet"]))["env"]]
    assert names.index("POD_NAME") < names.index("RAFTD_PEER_CERT")  # $(POD_NAME) expands
