"""Checkpoint files as OpenMMLab's own tools write them load, export and say where they came from.

The files are built the way mmcv 0.x, mmengine's `Runner.save_checkpoint` and the repositories'
`publish_model.py` build them (read from their sources): `meta` with numpy arrays, a
`message_hub` holding an `mmengine.logging.history_buffer.HistoryBuffer` (a class defined here
and gone before loading, as on a machine without mmengine), `optimizer` and `param_schedulers`
left in, the legacy (pre-zip) serialisation of torch 1.5, and mmseg 1.x's names that carry the
hash of the file before publishing. A pickle that would call a function is refused unrun.
"""

from __future__ import annotations

import collections
import hashlib
import http.server
import os
import sys
import threading
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from contract.card import ModelCard, Weights
from tests.training.test_checkpoints import (
    fcn_cityscapes_layout,
    openmmlab_backbone_layout,
    pose_layout,
    random_state,
)
from training.__main__ import main as training_cli
from training.checkpoints import CheckpointError, fetch, load_checkpoint, load_strict, provenance
from training.export import export_model, parity_images
from training.recipes import Recipe, Release, get_recipe

CLASSIFIER = "mobilenet-v2_8xb32_in1k"
FCN_CITYSCAPES = "mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024"
POSE_COCO = "td-hm_mobilenetv2_8xb64-210e_coco-256x192"
RANDOM = Weights(source="random-init")


# -- files as the tools write them -----------------------------------------------------------------


class HistoryBuffer:
    """mmengine's `HistoryBuffer` (the last values of a logged scalar), under mmengine's module name."""

    def __init__(self, values: list[float]) -> None:
        self.max_length = 1000000
        self._log_history = np.asarray(values)
        self._count_history = np.ones(len(values))


HistoryBuffer.__module__ = "mmengine.logging.history_buffer"


class _Mmengine:
    """Makes `mmengine.logging.history_buffer.HistoryBuffer` importable while a file is written."""

    MODULES = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")

    def __enter__(self) -> type[HistoryBuffer]:
        for name in self.MODULES:
            sys.modules[name] = types.ModuleType(name)
        sys.modules[self.MODULES[-1]].HistoryBuffer = HistoryBuffer  # type: ignore[attr-defined]
        return HistoryBuffer

    def __exit__(self, *exc: object) -> None:
        for name in self.MODULES:
            sys.modules.pop(name, None)


def _coco_dataset_meta() -> dict[str, Any]:
    """mmpose's `parse_pose_metainfo` output: numpy arrays among plain data."""
    return {
        "dataset_name": "coco",
        "num_keypoints": 17,
        "flip_indices": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15],
        "joint_weights": np.ones(17, dtype=np.float32),
        "sigmas": np.linspace(0.025, 0.107, 17).astype(np.float32),
        "keypoint_colors": np.zeros((17, 3), dtype=np.uint8),
        "skeleton_links": [(15, 13), (13, 11)],
    }


def _optimizer_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    tensors = [v for v in state.values() if v.is_floating_point()][:3]
    return {
        "state": {
            i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(t)} for i, t in enumerate(tensors)
        },
        "param_groups": [{"lr": 5e-4, "betas": (0.9, 0.999), "params": list(range(len(tensors)))}],
    }


def mmengine_runner_file(path: Path, state: dict[str, torch.Tensor], dataset_meta: dict[str, Any]) -> Path:
    """What mmengine's `Runner.save_checkpoint` writes (`epoch_210.pth`)."""
    with _Mmengine() as history_buffer:
        torch.save(
            {
                "meta": {
                    "epoch": 210,
                    "iter": 100_000,
                    "cfg": "model = dict(type='TopdownPoseEstimator')",
                    "seed": 0,
                    "experiment_name": "td-hm_mobilenetv2",
                    "time": "20221016_120000",
                    "mmengine_version": "0.2.0",
                    "dataset_meta": dataset_meta,
                },
                "state_dict": collections.OrderedDict(state),
                "message_hub": {
                    "log_scalars": {"train/loss": history_buffer([0.0012, 0.0011])},
                    "runtime_info": {"epoch": 210, "iter": 100_000, "dataset_meta": dataset_meta},
                    "resumed_keys": {"epoch": True},
                },
                "optimizer": _optimizer_state(state),
                "param_schedulers": [{"base_lrs": [5e-4], "last_step": 210, "milestones": {170: 1, 200: 1}}],
            },
            path,
        )
    return path


def mmpose_1x_publish(runner_file: Path, out_dir: Path, stem: str) -> Path:
    """mmpose 1.x `tools/misc/publish_model.py`: drop optimizer and message_hub, name
    `<stem>-<sha256(out)[:8]>_<date>.pth` (the hash of the published file)."""
    checkpoint = _read_with_mmengine(runner_file)
    del checkpoint["optimizer"], checkpoint["message_hub"]
    out = out_dir / f"{stem}.pth"
    torch.save(checkpoint, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return out.rename(out_dir / f"{stem}-{digest[:8]}_20221016.pth")


def mmseg_1x_publish(runner_file: Path, out_dir: Path, stem: str) -> Path:
    """mmseg 1.x `tools/misc/publish_model.py`: drop optimizer only (message_hub stays), and name
    the output after `sha256sum(in_file)` — the file *before* publishing."""
    checkpoint = _read_with_mmengine(runner_file)
    del checkpoint["optimizer"]
    out = out_dir / f"{stem}.pth"
    with _Mmengine():
        torch.save(checkpoint, out)
    digest = hashlib.sha256(runner_file.read_bytes()).hexdigest()
    return out.rename(out_dir / f"{stem}-{digest[:8]}.pth")


def mmcv_0x_published(out_dir: Path, stem: str, state: dict[str, torch.Tensor]) -> Path:
    """mmcv 0.x `save_checkpoint` + the 0.x `publish_model.py`, under torch 1.5 (legacy format):
    `meta` with the config text and CLASSES, optimizer dropped, named after its own hash."""
    out = out_dir / f"{stem}.pth"
    checkpoint = {
        "meta": {"mmcv_version": "1.0.2", "time": "Wed Jul  8 12:00:00 2020", "config": "model = dict()"},
        "state_dict": collections.OrderedDict(state),
    }
    torch.save(checkpoint, out, _use_new_zipfile_serialization=False)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return out.rename(out_dir / f"{stem}-{digest[:8]}.pth")


def _read_with_mmengine(path: Path) -> dict[str, Any]:
    with _Mmengine():
        return torch.load(path, weights_only=False)  # the test's own file, as the tool reads it


def network_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """Weights with usable values (random normals would give BatchNorm negative variances) under
    the layout's keys, with BatchNorm statistics that differ from their initial values."""
    torch.manual_seed(seed)
    state = get_recipe(name).build().state_dict()
    g = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
    return {k: v.clone() for k, v in state.items()}


def _onnx_output(folder: Path, recipe: Recipe) -> np.ndarray:
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": parity_images(recipe)})[0]


def _plain_model(recipe: Recipe, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = recipe.build()
    from training.checkpoints import to_openmmlab_keys

    load_strict(model, to_openmmlab_keys(state))
    return model


def _exported_output(model: torch.nn.Module, recipe: Recipe, out: Path) -> np.ndarray:
    return _onnx_output(export_model(model, recipe, out, RANDOM), recipe)


# -- the files load, export, and agree with their plain state dicts --------------------------------


def test_mmpose_1x_files_with_numpy_meta_and_history_buffers_load_and_export_as_their_state_dict(
    tmp_path: Path,
) -> None:
    recipe = get_recipe(POSE_COCO)
    state = network_state(POSE_COCO, seed=11)
    assert set(state) == set(pose_layout("head", 17))
    runner = mmengine_runner_file(tmp_path / "epoch_210.pth", state, _coco_dataset_meta())
    published = mmpose_1x_publish(runner, tmp_path, "td-hm_mobilenetv2_8xb64-210e_coco-256x192")
    assert "mmengine" not in sys.modules  # nothing the files name can be imported
    expected = _exported_output(_plain_model(recipe, state), recipe, tmp_path / "plain")
    for file in (runner, published):
        model = recipe.build()
        loaded = load_checkpoint(model, str(file))
        assert loaded.layout == "openmmlab"
        assert isinstance(loaded.meta["dataset_meta"]["sigmas"], np.ndarray)
        np.testing.assert_array_equal(_exported_output(model, recipe, tmp_path / file.stem), expected)


def test_mmseg_1x_publish_keeps_its_message_hub_and_names_the_file_after_another_files_hash(
    tmp_path: Path,
) -> None:
    recipe = get_recipe(FCN_CITYSCAPES)
    state = network_state(FCN_CITYSCAPES, seed=12)
    assert set(state) == set(fcn_cityscapes_layout())
    runner = mmengine_runner_file(tmp_path / "iter_80000.pth", state, {"classes": ("road", "sidewalk")})
    published = mmseg_1x_publish(
        runner, tmp_path, "mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024-20230224"
    )
    name_hash = published.name[-12:-4]
    assert not hashlib.sha256(published.read_bytes()).hexdigest().startswith(name_hash)

    model = recipe.build()
    loaded = load_checkpoint(model, str(published))  # a local path: read, though its name cannot be checked
    assert loaded.meta["epoch"] == 210
    expected = _exported_output(_plain_model(recipe, state), recipe, tmp_path / "plain")
    np.testing.assert_array_equal(_exported_output(model, recipe, tmp_path / "published"), expected)


def test_mmcv_0x_legacy_format_classifier_loads_as_its_state_dict(tmp_path: Path) -> None:
    recipe = get_recipe(CLASSIFIER)
    state = network_state(CLASSIFIER, seed=13)
    published = mmcv_0x_published(tmp_path, "mobilenet_v2_batch256_imagenet_20200708", state)
    with open(published, "rb") as f:
        assert f.read(2) != b"PK"  # the pre-zip serialisation
    model = recipe.build()
    load_checkpoint(model, str(published))
    for key, value in model.state_dict().items():
        if key in state:
            assert torch.equal(value, state[key]), key


# -- nothing in a file runs ------------------------------------------------------------------------


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_a_pickle_that_calls_a_function_is_refused_and_runs_nothing(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "ran"
    state = random_state(
        openmmlab_backbone_layout() | {"head.fc.weight": (1000, 1280), "head.fc.bias": (1000,)}
    )
    hidden = _RunsCode(marker) if payload == "system" else _Evals()
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"note": hidden}, "state_dict": state}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(get_recipe(CLASSIFIER).build(), str(path))
    assert not marker.exists()


# -- hashes, records and provenance ----------------------------------------------------------------


def test_a_1x_name_is_downloaded_recorded_and_a_changed_file_is_then_refused(
    tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    root, base = http_root
    state = random_state(fcn_cityscapes_layout(), seed=14)
    runner = mmengine_runner_file(tmp_path / "iter_80000.pth", state, {})
    published = mmseg_1x_publish(runner, root, "fcn-20230224_185436")
    url = f"{base}/{published.name}"
    recipe = replace(get_recipe(FCN_CITYSCAPES), releases=(Release(url, name_hash="input"),))
    cache = tmp_path / "cache"

    loaded = load_checkpoint(recipe.build(), url, recipe.releases, cache)
    weights = provenance(loaded, recipe, url)
    assert weights.source == "openmmlab" and weights.checkpoint_sha256 == loaded.sha256
    assert (cache / f"{published.name}.sha256").read_text().strip() == loaded.sha256

    # The publisher replaces the file under the same name; the cached copy is gone.
    (cache / published.name).unlink()
    torch.save({"state_dict": random_state(fcn_cityscapes_layout(), seed=15)}, published)
    with pytest.raises(CheckpointError, match="recorded when this file was first downloaded"):
        fetch(url, cache, recipe.releases)

    # The same name refused under the 0.x rule: its hash is not the file's.
    with pytest.raises(CheckpointError, match="expected hash prefix"):
        fetch(url, tmp_path / "other-cache")


def test_a_download_cut_short_of_its_content_length_is_refused(tmp_path: Path) -> None:
    class CutShort(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK" + b"\0" * 1000)  # then the connection closes

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ckpt_20200708-3b2dc3af.pth"
        with pytest.raises(CheckpointError, match=r"cut off|truncated"):
            fetch(url, tmp_path / "cache")
    finally:
        server.shutdown()
    assert not list((tmp_path / "cache").iterdir())


def test_provenance_is_a_release_only_when_the_files_hash_proves_it(tmp_path: Path) -> None:
    state = random_state(
        openmmlab_backbone_layout() | {"head.fc.weight": (1000, 1280), "head.fc.bias": (1000,)}, seed=16
    )
    published = mmcv_0x_published(tmp_path, "mobilenet_v2_batch256_imagenet_20200708", state)
    recipe = replace(get_recipe(CLASSIFIER), releases=(Release(f"https://example.invalid/{published.name}"),))
    as_release = provenance(load_checkpoint(recipe.build(), str(published), recipe.releases), recipe, "x")
    assert as_release.source == "openmmlab" and as_release.trained_on == "imagenet-1k"
    # The real recipe's release has another hash: the same file is only "imported".
    real = get_recipe(CLASSIFIER)
    imported = provenance(load_checkpoint(real.build(), str(published), real.releases), real, "x")
    assert imported.source == "imported" and imported.trained_on is None


def _eleven_class_folders(root: Path) -> tuple[Path, list[str]]:
    from training.data.synthetic.shapes import CLASSIFICATION_SHAPES, write_classification

    classes = sorted(CLASSIFICATION_SHAPES)[:11]
    return write_classification(root, n_train=22, n_val=11, classes=classes, side_range=(64, 96)), classes


@pytest.mark.slow
def test_training_on_eleven_folders_exports_an_eleven_class_trained_model(tmp_path: Path) -> None:
    data, classes = _eleven_class_folders(tmp_path / "folders")
    (data / "classes.txt").unlink()  # a user's folders: no list beside them
    models, run = tmp_path / "models", tmp_path / "run"
    args = ["train", CLASSIFIER, "--data", str(data), "--run-dir", str(run), "--out", str(models)]
    assert training_cli([*args, "--iterations", "2", "--batch-size", "4", "--workers", "0"]) == 0
    card = ModelCard.read(models / CLASSIFIER / "1" / "card.json")
    assert card.labels == classes and card.outputs[0].shape[-1] == 11
    assert card.weights.source == "trained" and card.weights.trained_on == str(data)
    assert card.published_metrics == {}  # ImageNet's figures say nothing of these classes

    # The run's checkpoint exported again: still trained, still its own classes.
    assert (
        training_cli(["export", CLASSIFIER, "--checkpoint", str(run / "latest.pth"), "--out", str(models)])
        == 0
    )
    again = ModelCard.read(models / CLASSIFIER / "2" / "card.json")
    assert again.labels == classes and again.weights.source == "trained"
    assert again.weights.trained_on == str(data)


# -- test scale ------------------------------------------------------------------------------------


def test_evaluate_runs_cityscapes_whole_images_at_the_test_scale(tmp_path: Path) -> None:
    from training.data.synthetic import generate
    from training.engine import evaluate

    data = generate("cityscapes", tmp_path / "city", n_train=1, n_val=2, seed=3)
    recipe = get_recipe(FCN_CITYSCAPES)
    model = recipe.build(with_aux=False)
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(tuple(args[0].shape)))
    metrics = evaluate(recipe, model, data, "cpu")
    assert "mIoU" in metrics
    assert seen and all(shape[1:3] == (1024, 2048) for shape in seen)  # (N, H, W, 3), whole image


def test_evaluate_without_a_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert training_cli(["evaluate", CLASSIFIER, "--data", str(tmp_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_test_scale_export_of_ade20k_explains_why_there_is_none(capsys: pytest.CaptureFixture[str]) -> None:
    ade = "mobilenet-v2-d8_fcn_4xb4-160k_ade20k-512x512"
    assert training_cli(["export", ade, "--test-scale", "--out", "/nonexistent"]) == 2
    assert "keeps each image's aspect ratio" in capsys.readouterr().err


@pytest.mark.slow
def test_cityscapes_test_scale_export_serves_whole_images(tmp_path: Path) -> None:
    from PIL import Image

    from tests.app.conftest import serve

    models = tmp_path / "models"
    assert training_cli(["export", FCN_CITYSCAPES, "--test-scale", "--out", str(models)]) == 0
    card = ModelCard.read(models / FCN_CITYSCAPES / "1" / "card.json")
    assert (card.input.height, card.input.width) == (1024, 2048)
    image = tmp_path / "street.png"
    Image.fromarray(np.full((1024, 2048, 3), 90, np.uint8)).save(image)
    with serve(models) as server, server.client(timeout=120) as client:
        answer = client.post(
            "/v1/segment",
            params={"model": FCN_CITYSCAPES, "format": "json"},
            files={"file": image.read_bytes()},
        )
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert result["image"] == {"width": 2048, "height": 1024}


def test_coco_pose_evaluation_runs_mmposes_flip_test(tmp_path: Path) -> None:
    """Every crop is run twice: as it is and mirrored (mmpose's `flip_test=True`)."""
    from training.data.synthetic import generate
    from training.engine import evaluate

    data = generate("coco", tmp_path / "coco", n_train=1, n_val=3, seed=5)
    recipe = get_recipe(POSE_COCO)
    model = recipe.build()
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(args[0].clone()))
    assert "AP" in evaluate(recipe, model, data, "cpu")
    assert len(seen) == 2
    assert torch.equal(seen[1], torch.flip(seen[0], dims=[2]))  # (N, H, W, 3) mirrored left-right
