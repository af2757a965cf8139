"""The model repository: versions, the MODELS setting, and broken models that must not stop others."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from app.config import Settings
from app.metrics import Metrics
from app.registry import ModelEntry, ModelRegistry
from app.runtime import plan_device
from contract.card import ModelCard, sha256_file
from contract.repository import CARD_FILE, MODEL_FILE
from tests.app.conftest import RunningServer, encode, scene, serve


def copy_model(source_dir: Path, repository: Path, name: str, version: int = 1) -> Path:
    """Copy a model version under a new name/version, with its card rewritten to match."""
    target = repository / name / str(version)
    target.mkdir(parents=True)
    shutil.copyfile(source_dir / MODEL_FILE, target / MODEL_FILE)
    card = ModelCard.read(source_dir / CARD_FILE).model_copy(update={"name": name, "version": version})
    (target / CARD_FILE).write_text(card.to_json())
    return target


def registry_for(repository: Path, **settings: object) -> ModelRegistry:
    registry = ModelRegistry(Settings(model_repository=repository, **settings), Metrics())  # type: ignore[arg-type]
    registry.discover()
    return registry


def test_newest_version_of_each_model_is_chosen(
    model_repository: Path, names: dict[str, str], tmp_path: Path
) -> None:
    source = model_repository / names["classification"] / "1"
    for version in (1, 2, 10):
        copy_model(source, tmp_path, "clf", version)
    (tmp_path / "clf" / ".export-staging").mkdir()  # an export in progress is not a version
    assert registry_for(tmp_path).entries["clf"].version == 10


def test_models_setting_pins_versions_and_reports_missing_models(
    model_repository: Path, names: dict[str, str], tmp_path: Path
) -> None:
    source = model_repository / names["classification"] / "1"
    copy_model(source, tmp_path, "clf", 1)
    copy_model(source, tmp_path, "clf", 2)
    copy_model(source, tmp_path, "other", 1)
    registry = registry_for(tmp_path, models="clf:1,ghost")
    assert set(registry.entries) == {"clf", "ghost"}
    assert (registry.entries["clf"].version, registry.entries["clf"].state) == (1, "loading")
    ghost = registry.entries["ghost"]
    assert ghost.state == "failed" and "no folder 'ghost'" in (ghost.reason or "")


@pytest.fixture(scope="module")
def repository_with_broken_models(
    model_repository: Path, names: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    repository = tmp_path_factory.mktemp("broken-repository")
    source = model_repository / names["classification"] / "1"
    copy_model(source, repository, names["classification"])
    tampered = copy_model(source, repository, "tampered")
    with open(tampered / MODEL_FILE, "r+b") as f:  # bytes changed after the card was written
        f.seek(1000)
        f.write(b"\0\1\2\3")
    garbage = copy_model(source, repository, "garbage")
    (garbage / MODEL_FILE).write_bytes(b"this is not an onnx file" * 100)
    card = json.loads((garbage / CARD_FILE).read_text())
    card["onnx_sha256"] = sha256_file(garbage / MODEL_FILE)  # the hash matches; the graph is garbage
    (garbage / CARD_FILE).write_text(json.dumps(card))
    (repository / "empty").mkdir()
    return repository


@pytest.fixture(scope="module")
def broken_server(repository_with_broken_models: Path) -> Iterator[RunningServer]:
    with serve(repository_with_broken_models) as running:
        yield running


def test_broken_models_are_reported_by_readyz_while_the_others_serve(
    broken_server: RunningServer, names: dict[str, str]
) -> None:
    with broken_server.client() as client:
        ready = client.get("/readyz")
        classified = client.post(
            "/v1/classify", content=encode(scene(64, 64)), headers={"content-type": "image/png"}
        )
        garbage = client.post(
            "/v1/classify",
            params={"model": "garbage"},
            content=encode(scene(64, 64)),
            headers={"content-type": "image/png"},
        )
    assert ready.status_code == 503
    models = {m["name"]: m for m in ready.json()["models"]}
    assert models[names["classification"]]["state"] == "ready"
    assert models["tampered"]["state"] == "failed" and "sha256" in models["tampered"]["reason"]
    assert models["tampered"]["path"].endswith("tampered/1")
    assert (
        models["garbage"]["state"] == "failed" and "ONNX Runtime cannot open" in models["garbage"]["reason"]
    )
    assert models["empty"]["state"] == "failed" and "no numbered version" in models["empty"]["reason"]
    assert classified.status_code == 200
    assert (garbage.status_code, garbage.json()["error"]["code"]) == (503, "model_not_ready")


def test_models_lists_failed_models_with_their_reason(broken_server: RunningServer) -> None:
    with broken_server.client() as client:
        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["tampered"]["state"] == "failed"
    assert "sha256" in listed["tampered"]["reason"]


def test_models_with_large_inputs_get_smaller_batches(model_repository: Path) -> None:
    registry = registry_for(model_repository, max_batch_size=8, max_batch_pixels=2 * 512 * 1024)
    limits = {}
    for entry in registry.entries.values():
        card_path = entry.path / CARD_FILE
        card = ModelCard.read(card_path)
        limits[card.task] = registry.batch_limit(card)
    assert limits == {"classification": 8, "pose": 8, "segmentation": 2}
    uncapped = registry_for(model_repository, max_batch_size=8, max_batch_pixels=0)
    segmentation = next(
        ModelCard.read(e.path / CARD_FILE) for e in uncapped.entries.values() if "d8" in e.name
    )
    assert uncapped.batch_limit(segmentation) == 8


def test_two_runs_in_flight_on_the_cpu_share_the_batch_limit_one_on_cuda(model_repository: Path) -> None:
    from app.registry import inference_runs, rows_per_run

    registry = registry_for(model_repository, max_batch_size=8, max_batch_pixels=1 << 20)
    cards = {c.task: c for c in (ModelCard.read(e.path / CARD_FILE) for e in registry.entries.values())}
    settings = registry.settings
    runs = {task: inference_runs(settings, card, uses_cuda=False) for task, card in cards.items()}
    assert runs == {"classification": 2, "pose": 2, "segmentation": 2}
    rows = {task: rows_per_run(settings, card, runs[task]) for task, card in cards.items()}
    assert rows == {"classification": 4, "pose": 4, "segmentation": 1}  # as many rows in flight as one batch
    assert inference_runs(settings, cards["classification"], uses_cuda=True) == 1
    explicit = settings.model_copy(update={"inference_runs": 3})
    assert inference_runs(explicit, cards["pose"], uses_cuda=False) == 3
    assert rows_per_run(explicit, cards["pose"], 3) == 2
    assert inference_runs(explicit, cards["segmentation"], uses_cuda=False) == 2  # never more runs than rows
    bound = settings.model_copy(update={"io_binding": True, "inference_runs": 2})
    assert inference_runs(bound, cards["classification"], uses_cuda=True) == 1


class _RecordingRegistry(ModelRegistry):
    """The registry, noting the batch size of each warm-up run (which still runs the real session)."""

    warmed: ClassVar[list[int]] = []

    @staticmethod
    def _warm_up(entry: ModelEntry, card: ModelCard, size: int) -> float:
        _RecordingRegistry.warmed.append(size)
        return ModelRegistry._warm_up(entry, card, size)


@pytest.mark.parametrize(
    ("settings", "warmed"),
    [
        ({}, [1, 4]),  # the help: 1 and the largest batch (8 split between the CPU's 2 runs)
        ({"inference_runs": 1}, [1, 8]),
        ({"warmup_batch_sizes": [2, 8]}, [2, 4]),  # a size above the largest batch runs at it
    ],
)
def test_warm_up_runs_the_batch_sizes_the_warmup_batch_sizes_help_describes(
    tiny_repository: Path, settings: dict[str, object], warmed: list[int]
) -> None:
    options = {"max_batch_size": 8, "device": "cpu", **settings}
    registry = _RecordingRegistry(Settings(model_repository=tiny_repository, **options), Metrics())  # type: ignore[arg-type]
    registry.discover()
    _RecordingRegistry.warmed = []
    registry.load_one(registry.entries["tiny"], plan_device(registry.settings))
    assert _RecordingRegistry.warmed == warmed
    described = Settings.model_fields["warmup_batch_sizes"].description or ""
    assert "empty = 1 and that largest batch on the CPU" in described
