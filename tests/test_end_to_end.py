"""Train → export → serve: accuracy through the HTTP service equals accuracy in PyTorch.

The one test that crosses both halves: if training's evaluation preprocessing and the service's
ever drift apart, the two accuracies (and the per-image answers) stop agreeing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from contract.card import ModelCard, Weights
from tests.app.conftest import serve
from training.data.classification import ImageFolderDataset, ResizeCenterCrop
from training.data.synthetic import generate
from training.defaults import synthetic_recipe
from training.engine import TrainOptions, train
from training.export import export_model
from training.recipes import get_recipe


@pytest.mark.slow
def test_accuracy_over_http_equals_accuracy_in_pytorch(tmp_path: Path) -> None:
    data = generate("classification", tmp_path / "shapes", n_train=48, n_val=36, seed=7)
    recipe = synthetic_recipe(get_recipe("mobilenet-v2_8xb32_in1k"), data)
    options = TrainOptions(
        data=data,
        run_dir=tmp_path / "run",
        iterations=20,
        batch_size=16,
        lr=0.02,
        train_size=(64, 64),
        workers=0,
    )
    result = train(recipe, options)
    folder = export_model(
        result.model, recipe, tmp_path / "models", Weights(source="trained"), result.metrics
    )

    # PyTorch, on the evaluation pipeline of training.
    val = ImageFolderDataset(data, "val", ResizeCenterCrop(recipe.input_size[0]))
    with torch.no_grad():
        images = torch.from_numpy(np.stack([val[i][0] for i in range(len(val))]))
        torch_labels = result.model.predict(images).argmax(1).numpy()
    truth = np.array([label for _, label in val.samples])
    torch_top1 = round(100 * float(np.mean(torch_labels == truth)), 2)
    assert (
        torch_top1 == result.metrics["top1"] == ModelCard.read(folder / "card.json").measured_metrics["top1"]
    )

    # The service, on the same files as a client uploads them.
    with serve(tmp_path / "models") as server, server.client() as client:
        http_labels = []
        for path, _ in val.samples:
            answer = client.post(
                "/v1/classify", params={"model": recipe.name, "top_k": 1}, files={"file": path.read_bytes()}
            )
            assert answer.status_code == 200, answer.text
            http_labels.append(answer.json()["results"][0]["predictions"][0]["index"])
    assert list(torch_labels) == http_labels
    assert round(100 * float(np.mean(np.array(http_labels) == truth)), 2) == torch_top1
