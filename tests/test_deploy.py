"""Deployment files, checked without a container engine: Dockerfiles, compose, nginx, Kubernetes, Triton.

No Docker or GPU runs here, so these tests read the files and hold every name they mention against
the repository: files copied into images, extras, modules and commands, settings, routes, ports,
metric names. The Triton repository is written for the three default models and compared with
what ONNX Runtime reads from the same ONNX files.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import pytest
import yaml
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.metrics import Metrics
from contract.card import ModelCard, sha256_file
from contract.repository import CARD_FILE, MODEL_FILE
from tests.conftest import TEST_RECIPES
from training import triton
from training.__main__ import build_parser
from training.recipes import DEFAULT_RECIPES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
# Where a deployment deliberately differs from Settings' defaults (each file says why).
DEPLOY_OVERRIDES = {"MODEL_REPOSITORY", "DEVICE", "GRPC_PORT"}
DEFAULT_MODEL_ENV = {
    "DEFAULT_CLASSIFICATION_MODEL",
    "DEFAULT_SEGMENTATION_MODEL",
    "DEFAULT_POSE_MODEL",
    "DEFAULT_DETECTION_MODEL",
}
INTERPOLATION = re.compile(r"^\$\{(\w+):-(.*)\}$")


# -- helpers ---------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose_files() -> dict[str, dict[str, Any]]:
    return {
        "docker-compose.yml": load_yaml(ROOT / "docker-compose.yml"),
        "docker/compose.replicas.yml": load_yaml(DOCKER / "compose.replicas.yml"),
    }


def api_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the serving image (built from docker/Dockerfile)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile") == "docker/Dockerfile"
    }


def compose_defaults(environment: dict[str, str]) -> dict[str, str]:
    """`KEY: ${KEY:-default}` -> default; a literal value is its own default."""
    out = {}
    for key, value in environment.items():
        match = INTERPOLATION.match(str(value))
        if match:
            assert match.group(1) == key, f"{key} interpolates ${{{match.group(1)}}}"
            out[key] = match.group(2)
        else:
            out[key] = str(value)
    return out


def argv(command: Any) -> list[str]:
    return list(command) if isinstance(command, list) else shlex.split(command)


def check_python_command(args: list[str]) -> None:
    """`python -m MODULE ...`: the module runs as a program, and a `training` command parses."""
    assert args[0] in ("python", "python3") and args[1] == "-m", args
    module = args[2]
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"no module {module}"
    if spec.submodule_search_locations is not None:  # a package runs its __main__
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"
    if module == "training":
        build_parser().parse_args(args[3:])  # SystemExit (a failure) on an unknown command or option


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Enough of .dockerignore's matching for our patterns: the last matching line wins, `!` re-includes."""
    ignored = False
    for line in patterns:
        exception = line.startswith("!")
        pattern = line.removeprefix("!")
        bare = pattern.removeprefix("**/")
        candidates = [path, *[path[: i.start()] for i in re.finditer("/", path)]]
        if pattern.startswith("**/"):
            parts = path.split("/")
            candidates += ["/".join(parts[i:]) for i in range(len(parts))] + parts
        if any(fnmatch.fnmatch(c, bare) for c in candidates):
            ignored = not exception
    return ignored


def read_pbtxt(text: str) -> dict[str, list[Any]]:
    """A small reader of protobuf text format: every field maps to the list of its values."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.sub(r"(?m)^\s*#.*$", "", text))

    def message(i: int, closing: str | None) -> tuple[dict[str, list[Any]], int]:
        fields: dict[str, list[Any]] = {}
        while i < len(tokens) and tokens[i] != closing:
            name = tokens[i]
            i += 1
            if tokens[i] == ":":
                i += 1
            value, i = parse_value(i)
            fields.setdefault(name, []).extend(value if isinstance(value, list) else [value])
            if i < len(tokens) and tokens[i] in (",", ";"):
                i += 1
        return fields, i + 1

    def parse_value(i: int) -> tuple[Any, int]:
        token = tokens[i]
        if token == "{":
            return message(i + 1, "}")
        if token == "[":
            items, i = [], i + 1
            while tokens[i] != "]":
                item, i = parse_value(i)
                items.append(item)
                if tokens[i] == ",":
                    i += 1
            return items, i + 1
        if token.startswith('"'):
            return ast.literal_eval(token), i + 1
        return (int(token) if re.fullmatch(r"-?\d+", token) else token), i + 1

    fields, _ = message(0, None)
    return fields


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting from the caller's environment (the Makefile exports MODEL_REPOSITORY)."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real app, started (lifespan and all) on an empty model repository."""
    repository = tmp_path_factory.mktemp("empty-models")
    with TestClient(create_app(Settings(model_repository=repository, device="cpu"))) as client:
        yield client


# -- compose ---------------------------------------------------------------------------------------


def test_plain_compose_up_is_the_gpu_path() -> None:
    compose = load_yaml(ROOT / "docker-compose.yml")
    services = compose["services"]
    default = {name for name, svc in services.items() if not svc.get("profiles")}
    assert default == {"models", "api"}

    api = services["api"]
    (device,) = api["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and device["capabilities"] == ["gpu"]
    assert api["depends_on"]["models"]["condition"] == "service_completed_successfully"
    assert api["restart"] == "unless-stopped"
    assert api["ports"] == ["${PORT:-8000}:${PORT:-8000}", "${GRPC_PORT:-8001}:${GRPC_PORT:-8001}"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert compose_defaults(api["environment"])["DEVICE"] == "cuda"
    assert argv(services["models"]["command"])[2:4] == ["training", "defaults"]


def test_cpu_profile_serves_without_a_gpu() -> None:
    services = load_yaml(ROOT / "docker-compose.yml")["services"]
    cpu = {name for name, svc in services.items() if "cpu" in svc.get("profiles", [])}
    assert cpu == {"api-cpu", "models-cpu"}
    api = services["api-cpu"]
    assert "deploy" not in api
    assert api["environment"]["DEVICE"] == "cpu"
    assert api["depends_on"]["models-cpu"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert "deploy" not in services["models-cpu"]


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker/compose.replicas.yml"])
def test_compose_mounts_one_model_volume_at_model_repository(name: str) -> None:
    compose = compose_files()[name]
    assert compose["name"] == "mnv2-serve"  # both files share the volume mnv2-serve_models
    assert "models" in compose["volumes"]
    for service_name, svc in compose["services"].items():
        if service_name == "lb":
            continue
        mounts = [m for m in svc["volumes"] if m.split(":")[0] == "models"]
        assert mounts and mounts[0].split(":")[1] == "/models", service_name
        if service_name in api_services(compose):
            assert mounts[0].endswith(":ro"), f"{service_name} only reads models"
            assert svc["environment"]["MODEL_REPOSITORY"] == "/models"
        else:  # the one-shot that fills the volume
            assert svc["build"]["dockerfile"] == "docker/Dockerfile.train"
            assert argv(svc["command"]) == ["python", "-m", "training", "defaults", "--out", "/models"]


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker/compose.replicas.yml"])
def test_compose_environment_names_every_setting_and_nothing_else(name: str) -> None:
    compose = compose_files()[name]
    for service_name, svc in compose["services"].items():
        unknown = set(svc.get("environment", {})) - SETTINGS_ENV
        assert not unknown, f"{service_name}: {sorted(unknown)} are not Settings fields"
    for service_name, svc in api_services(compose).items():
        missing = SETTINGS_ENV - set(svc["environment"])
        assert not missing, f"{service_name} does not set {sorted(missing)} (new Settings fields?)"


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker/compose.replicas.yml"])
def test_compose_defaults_are_the_settings_defaults(name: str, clean_env: pytest.MonkeyPatch) -> None:
    reference = Settings()
    for service_name, svc in api_services(compose_files()[name]).items():
        env = compose_defaults(svc["environment"])
        for key in DEFAULT_MODEL_ENV:
            # The models `docker compose up` builds, so the task routes work without `model`.
            assert env[key] in DEFAULT_RECIPES, f"{service_name}: {key}={env[key]} is not built by default"
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            configured = Settings()  # also proves every default parses
        for field in Settings.model_fields:
            if field.upper() in DEPLOY_OVERRIDES | DEFAULT_MODEL_ENV:
                continue
            assert getattr(configured, field) == getattr(reference, field), f"{service_name}: {field.upper()}"


def test_commands_in_compose_are_real_modules() -> None:
    for compose in compose_files().values():
        for svc in compose["services"].values():
            if "command" in svc:
                check_python_command(argv(svc["command"]))


def test_compose_builds_from_files_that_exist() -> None:
    for name, compose in compose_files().items():
        base = (ROOT / name).parent
        for svc in compose["services"].values():
            build = svc.get("build")
            if build:
                context = (base / build["context"]).resolve()
                assert context == ROOT, f"{name}: the build context must be the repository root"
                assert (context / build["dockerfile"]).is_file()
            for mount in svc.get("volumes", []):
                source = mount.split(":")[0]
                if source.startswith("."):
                    assert (base / source).is_file(), f"{name}: {source}"


# -- Dockerfiles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.train"])
def test_dockerfile_builds_offline_on_python_3_10_as_a_numeric_user(name: str) -> None:
    text = (DOCKER / name).read_text(encoding="utf-8")
    # A `# syntax=` line makes BuildKit pull a frontend image from Docker Hub: offline builds fail.
    assert not re.search(r"(?im)^#\s*syntax\s*=", text)
    # tomllib is Python >= 3.11; pyproject allows 3.10 (Ubuntu 22.04 CUDA images).
    assert "import tomllib" not in text
    users = [a for k, a in dockerfile(DOCKER / name) if k == "USER"]
    # Numeric, so that Kubernetes' runAsNonRoot can verify it.
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1])


@pytest.mark.parametrize(("name", "extra"), [("Dockerfile", "serve"), ("Dockerfile.train", "train")])
def test_dockerfile_names_only_what_the_repository_has(name: str, extra: str) -> None:
    path = DOCKER / name
    text = path.read_text(encoding="utf-8")
    instructions = dockerfile(path)
    ignored = dockerignore_patterns()

    for keyword, args in instructions:
        if keyword in ("COPY", "ADD") and "--from=" not in args:
            *sources, _ = [a for a in exec_form(args) if not a.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"{name} copies {source}, which does not exist"
                assert not dockerignored(source.rstrip("/"), ignored), f".dockerignore drops {source}"

    extras = set(re.findall(r"\['optional-dependencies'\]\['(\w+)'\]", text))
    extras |= {e for group in re.findall(r"\.\[([\w,]+)\]", text) for e in group.split(",")}
    assert extras == {extra}
    assert extra in PYPROJECT["project"]["optional-dependencies"]

    for module in re.findall(r"python3? -m ([\w.]+)", text):
        assert importlib.util.find_spec(module) is not None, f"{name}: python -m {module}"

    (cmd,) = [args for keyword, args in instructions if keyword == "CMD"]
    command = exec_form(cmd)
    if command[0] == "python":
        check_python_command(command)
    else:  # a console script of pyproject.toml
        target = PYPROJECT["project"]["scripts"][command[0]]
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_serving_image_is_multi_stage_non_root_without_torch() -> None:
    path = DOCKER / "Dockerfile"
    instructions = dockerfile(path)
    stages = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(stages) >= 2 and stages[0].endswith("AS builder")
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    assert any(k == "COPY" and "--from=builder" in a for k, a in final), "the venv comes from the builder"
    users = [a for k, a in final if k == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("VOLUME", '["/models"]') in final
    (healthcheck,) = [a for k, a in final if k == "HEALTHCHECK"]
    assert "/readyz" in healthcheck
    assert ("EXPOSE", str(Settings.model_fields["port"].default)) in final

    # No torch: not in the extra, not installed by hand, and training/ is not copied.
    serve = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["serve"]
    assert not any(re.match(r"torch\b", dep) for dep in serve)
    copied = " ".join(a for k, a in instructions if k == "COPY")
    assert "training" not in copied and "pip install torch" not in path.read_text(encoding="utf-8")


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    for name in ("Dockerfile", "Dockerfile.train"):
        instructions = dockerfile(DOCKER / name)
        installs = [i for i, (k, a) in enumerate(instructions) if k == "RUN" and "requirements.txt" in a]
        sources = [
            i for i, (k, a) in enumerate(instructions) if k == "COPY" and re.search(r"\b(app|training)/", a)
        ]
        assert installs and sources and max(installs) < min(sources), name


def test_serving_base_image_has_the_cuda_onnxruntime_was_built_for() -> None:
    (arg,) = [a for k, a in dockerfile(DOCKER / "Dockerfile") if k == "ARG" and a.startswith("BASE_IMAGE=")]
    image = arg.partition("=")[2]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+", image)
    assert match, image
    build_info = importlib.import_module("onnxruntime.capi.build_and_package_info")
    built_for = getattr(build_info, "cuda_version", "")
    if not built_for:
        pytest.skip("this onnxruntime is not a CUDA build")
    # CUDA promises compatibility within a major version from the minor a library was built with.
    assert int(match.group(1)) == int(built_for.split(".")[0])
    assert (int(match.group(1)), int(match.group(2))) >= tuple(int(v) for v in built_for.split(".")[:2])


def test_dockerignore_keeps_data_weights_and_environments_out() -> None:
    patterns = dockerignore_patterns()
    for path in (".git", ".venv", "models/x/1/model.onnx", "runs/a", "data/coco", "app/__pycache__/m.pyc",
                 ".pytest_cache", ".mypy_cache", "weights.pth"):  # fmt: skip
        assert dockerignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "app/main.py", "training/export.py", "training/data/pose.py"):
        assert not dockerignored(path, patterns), path


# -- replicas and nginx ----------------------------------------------------------------------------


def test_replicas_each_pin_their_own_gpu_behind_nginx() -> None:
    compose = load_yaml(DOCKER / "compose.replicas.yml")
    replicas = api_services(compose)
    assert len(replicas) >= 2
    gpus = []
    for svc in replicas.values():
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        gpus += device["device_ids"]
        assert "ports" not in svc, "only the load balancer is published"
        assert svc["depends_on"]["models"]["condition"] == "service_completed_successfully"
    assert len(gpus) == len(set(gpus)) == len(replicas)

    lb = compose["services"]["lb"]
    assert lb["image"].startswith("nginx:")
    # Started with the replicas, not after every one is healthy: one bad GPU must not hold it back.
    assert {name: dep["condition"] for name, dep in lb["depends_on"].items()} == dict.fromkeys(
        replicas, "service_started"
    )
    nginx = (DOCKER / "nginx.conf").read_text(encoding="utf-8")
    # Every replica is a first choice, and the ring sends each on to another one.
    split = re.search(r"split_clients\s+\S+\s+\$mnv2_first\s*\{(.*?)\}", nginx, re.S)
    ring = re.search(r"map\s+\$mnv2_first\s+\$mnv2_second\s*\{(.*?)\}", nginx, re.S)
    assert split and ring
    assert set(re.findall(r"^\s*(?:[\d.]+%|\*)\s+([\w.-]+);", split.group(1), re.M)) == set(replicas)
    pairs = dict(re.findall(r"^\s*([\w.-]+)\s+([\w.-]+);", ring.group(1), re.M))
    assert set(pairs) == set(pairs.values()) == set(replicas)
    assert all(first != second for first, second in pairs.items())
    port = str(Settings.model_fields["port"].default)
    assert all(svc["environment"]["PORT"] == port for svc in replicas.values())
    passes = set(re.findall(r"proxy_pass http://\$mnv2_(\w+):(\d+);", nginx))
    assert passes == {("first", port), ("second", port)}
    # Names looked up per request through Docker's DNS: a recreated replica (new address) is
    # followed, a stopped one is skipped. No upstream `resolve`: nginx < 1.27.3 refuses it.
    assert re.search(r"^resolver 127\.0\.0\.11 valid=\d+s", nginx, re.M)
    assert re.search(r"^resolver_timeout \d+s;", nginx, re.M)
    assert not re.search(r"^\s*upstream\b", nginx, re.M)


def test_nginx_limits_bodies_as_the_service_does_and_retries_503() -> None:
    nginx = (DOCKER / "nginx.conf").read_text(encoding="utf-8")
    lb = load_yaml(DOCKER / "compose.replicas.yml")["services"]["lb"]
    assert "./nginx.conf:/etc/nginx/templates/default.conf.template:ro" in lb["volumes"]
    assert re.search(r"client_max_body_size \$\{MAX_BODY_BYTES\};", nginx)
    limit = compose_defaults(lb["environment"])["MAX_BODY_BYTES"]
    assert int(limit) == Settings.model_fields["max_body_bytes"].default
    # A full (503) or missing (502) first replica: the second one answers.
    first = nginx[nginx.index("location / {") : nginx.index("location @second_replica")]
    assert "proxy_intercept_errors on;" in first
    assert re.search(r"error_page 502 503 = @second_replica;", first)
    # A timeout is asked again only where the connection never opened (a replica just gone).
    assert re.search(r"error_page 504 = @first_timed_out;", first)
    timed_out = nginx[nginx.index("location @first_timed_out") : nginx.index("location @body_too_large")]
    assert 'if ($upstream_connect_time != "-")' in timed_out and '"code": "deadline_exceeded"' in timed_out
    assert re.search(r"proxy_set_header X-Request-ID ", nginx)
    # The replica echoes X-Request-ID; nginx adding it to proxied answers would send it twice.
    proxied = nginx[nginx.index("location / {") : nginx.index("location @first_timed_out")]
    assert not re.search(r"^\s*add_header X-Request-ID", proxied, re.M)
    assert '"code": "body_too_large"' in nginx  # the service's error shape, app/errors.py


# -- Kubernetes ------------------------------------------------------------------------------------


def k8s_objects() -> dict[str, dict[str, Any]]:
    """kind/name -> object, for every resource kustomization.yaml lists (plus hpa-queue.yaml)."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    objects: dict[str, dict[str, Any]] = {}
    for resource in [*kustomization["resources"], "hpa-queue.yaml"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text(encoding="utf-8")):
            assert doc["apiVersion"] and doc["kind"], resource
            objects.setdefault(f"{doc['kind']}/{doc['metadata']['name']}", doc)
    return objects


def test_every_kubernetes_file_parses() -> None:
    files = sorted(K8S.glob("*.yaml"))
    assert {f.name for f in files} >= {"kustomization.yaml", "deployment.yaml", "service.yaml", "hpa.yaml"}
    for path in files:
        assert all(doc is not None for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))), path
    kinds = {key.split("/")[0] for key in k8s_objects()}
    assert kinds >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "Job",
        "ConfigMap",
    }


def test_pods_meet_the_restricted_pod_security_standard_s_user_and_seccomp() -> None:
    pods = [
        o["spec"]["template"]["spec"]
        for k, o in k8s_objects().items()
        if k.split("/")[0] in ("Deployment", "Job")
    ]
    assert pods
    for pod in pods:
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_probes_and_ports_point_at_real_routes(client: TestClient) -> None:
    objects = k8s_objects()
    pod = objects["Deployment/mnv2-serve"]["spec"]["template"]
    (api,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    settings = objects["ConfigMap/mnv2-serve-settings"]["data"]
    assert ports == {"http": int(settings["PORT"]), "grpc": int(settings["GRPC_PORT"])}

    # Live while the process answers; ready (200) or not yet (503), never an unknown route.
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    expected = {"startupProbe": {200}, "livenessProbe": {200}, "readinessProbe": {200, 503}}
    for probe, statuses in expected.items():
        if probe in api:
            get = api[probe]["httpGet"]
            assert client.get(get["path"]).status_code in statuses, probe
            assert get["port"] in (*ports, *ports.values())
    annotations = pod["metadata"]["annotations"]
    assert client.get(annotations["prometheus.io/path"]).status_code == 200
    assert int(annotations["prometheus.io/port"]) in ports.values()
    assert client.get("/docs").status_code == 200

    for service_port in objects["Service/mnv2-serve"]["spec"]["ports"]:
        assert service_port["targetPort"] in (*ports, *ports.values())
    selector = objects["Service/mnv2-serve"]["spec"]["selector"]
    assert selector.items() <= pod["metadata"]["labels"].items()


def test_healthchecks_in_images_and_compose_probe_a_real_route(client: TestClient) -> None:
    # Exec-form commands: the image's HEALTHCHECK, then every compose healthcheck.
    probes = [
        json.loads(a.partition(" CMD ")[2])
        for k, a in dockerfile(DOCKER / "Dockerfile")
        if k == "HEALTHCHECK"
    ]
    for compose in compose_files().values():
        probes += [s["healthcheck"]["test"][1:] for s in compose["services"].values() if "healthcheck" in s]
    assert len(probes) >= 4
    for probe in probes:
        (path,) = re.findall(r"/(?:readyz|healthz)\b", " ".join(probe))
        assert client.get(path).status_code in (200, 503), probe
        if probe[:2] == ["python", "-c"]:
            compile(probe[2], "<healthcheck>", "exec")  # a typo here would mark a good container unhealthy


def test_deployment_asks_for_one_gpu_and_reads_the_model_volume() -> None:
    objects = k8s_objects()
    spec = objects["Deployment/mnv2-serve"]["spec"]["template"]["spec"]
    (api,) = spec["containers"]
    assert api["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert api["resources"]["requests"]["nvidia.com/gpu"] == 1
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    (mount,) = [m for m in api["volumeMounts"] if m["name"] in claims]
    assert mount["mountPath"] == "/models" and mount["readOnly"] is True
    assert f"PersistentVolumeClaim/{claims[mount['name']]}" in objects
    assert spec["initContainers"], "pods wait for the models Job"

    job = objects["Job/mnv2-models"]["spec"]["template"]["spec"]
    (builder,) = job["containers"]
    check_python_command(builder["command"])
    assert builder["command"][-1] == "/models"
    job_claims = [
        v["persistentVolumeClaim"]["claimName"] for v in job["volumes"] if "persistentVolumeClaim" in v
    ]
    assert job_claims == [claims[mount["name"]]]


def test_configmap_sets_real_settings_that_parse(clean_env: pytest.MonkeyPatch) -> None:
    data = k8s_objects()["ConfigMap/mnv2-serve-settings"]["data"]
    assert set(data) == SETTINGS_ENV, set(data) ^ SETTINGS_ENV
    for key, value in data.items():
        clean_env.setenv(key, value)
    settings = Settings()
    assert settings.device == "cuda" and str(settings.model_repository) == "/models"
    assert {data[k] for k in DEFAULT_MODEL_ENV} <= set(DEFAULT_RECIPES)


def test_autoscalers_target_the_deployment_and_metrics_the_service_exports() -> None:
    objects = k8s_objects()
    hpas = [o for key, o in objects.items() if key.startswith("HorizontalPodAutoscaler/")]
    assert hpas
    metrics = Metrics()
    observer = metrics.for_model("m", 1)
    observer.queue_depth(1)
    observer.batch_done(1, 0.01, [0.001])
    observer.request_done()
    lines = metrics.render().decode().splitlines()
    series = {line.split("{")[0].split(" ")[0] for line in lines if line and not line.startswith("#")}
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        assert f"{target['kind']}/{target['name']}" in objects
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in series
    adapter = load_yaml(K8S / "prometheus-adapter-values.yaml")
    for rule in adapter["rules"]["custom"]:
        names = set(re.findall(r"\bnv_\w+", rule["seriesQuery"] + rule["metricsQuery"]))
        assert names and names <= series, f"/metrics has no {sorted(names - series)}"


def test_kustomization_images_match_the_containers() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    images = {image["name"] for image in kustomization["images"]}
    objects = k8s_objects()
    used = set()
    for key in ("Deployment/mnv2-serve", "Job/mnv2-models"):
        spec = objects[key]["spec"]["template"]["spec"]
        used |= {c["image"] for c in spec.get("initContainers", []) + spec["containers"]}
    assert used == images


# -- Triton ----------------------------------------------------------------------------------------

ORT_TO_TRITON = {"tensor(uint8)": "TYPE_UINT8", "tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}


@pytest.fixture(scope="module")
def default_models(model_repository: Path) -> Path:
    """The default models but the detector, at version 1 (tests/conftest.py: exported once, cached)."""
    assert sorted(p.name for p in model_repository.iterdir() if p.is_dir()) == sorted(TEST_RECIPES)
    return model_repository


@pytest.fixture(scope="module")
def triton_repository(default_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton")
    written = triton.export_triton(default_models, out, max_batch_size=16, max_queue_delay_us=2000)
    assert sorted(written) == sorted(out / name for name in TEST_RECIPES)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", TEST_RECIPES)
def test_triton_config_matches_the_onnx_graph(
    name: str, default_models: Path, triton_repository: Path
) -> None:
    folder = triton_repository / name
    config = read_pbtxt((folder / triton.CONFIG_FILE).read_text(encoding="utf-8"))
    assert config["name"] == [name]
    assert config["platform"] == ["onnxruntime_onnx"]
    assert config["max_batch_size"] == [16]
    (batching,) = config["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == [2000]
    (group,) = config["instance_group"]
    assert group == {"count": [1], "kind": ["KIND_GPU"]}

    model = folder / "1" / MODEL_FILE
    card = ModelCard.read(default_models / name / "1" / CARD_FILE)
    assert sha256_file(model) == card.onnx_sha256  # the very file we export, not a re-save
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for field, tensors in (("input", session.get_inputs()), ("output", session.get_outputs())):
        assert [t["name"] for t in config[field]] == [[t.name] for t in tensors]
        for entry, tensor in zip(config[field], tensors, strict=True):
            assert entry["data_type"] == [ORT_TO_TRITON[tensor.type]]
            assert not isinstance(tensor.shape[0], int), "axis 0 is the dynamic batch"
            assert entry["dims"] == tensor.shape[1:]  # without the batch axis

    labels = folder / triton.LABELS_FILE
    if card.task == "classification":
        assert labels.read_text(encoding="utf-8").splitlines() == card.labels
        assert config["output"][0]["label_filename"] == [triton.LABELS_FILE]
    else:
        assert not labels.exists() and "label_filename" not in config["output"][0]


@pytest.mark.slow
def test_triton_export_again_replaces_without_touching_our_models(
    default_models: Path, triton_repository: Path
) -> None:
    name = DEFAULT_RECIPES[0]
    before = sha256_file(default_models / name / "1" / MODEL_FILE)
    stale = triton_repository / name / "7"
    stale.mkdir()
    (triton_repository / name / "1" / MODEL_FILE).unlink()
    triton.export_triton(default_models, triton_repository, max_batch_size=16, max_queue_delay_us=2000)
    assert sha256_file(triton_repository / name / "1" / MODEL_FILE) == before
    assert sha256_file(default_models / name / "1" / MODEL_FILE) == before
    assert not stale.exists(), "a version our repository lacks is not left for Triton to serve"


def test_triton_refuses_a_graph_without_a_dynamic_batch_axis(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / MODEL_FILE
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="dynamic batch"):
        triton.read_signature(path)


def test_triton_export_of_an_empty_repository_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no models"):
        triton.export_triton(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_export_triton_command(default_models: Path, tmp_path: Path) -> None:
    from training.__main__ import main

    try:
        build_parser().parse_args(["export-triton", "--out", str(tmp_path)])
    except SystemExit:
        pytest.skip("`python -m training export-triton` is not wired into training/__main__.py yet")
    assert main(["export-triton", "--models", str(default_models), "--out", str(tmp_path)]) == 0
    assert sorted(p.parent.name for p in tmp_path.glob(f"*/{triton.CONFIG_FILE}")) == sorted(TEST_RECIPES)
