"""`python -m training defaults` offline: three models trained on synthetic data, with honest cards."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from app.card import ModelCard
from training import defaults
from training.defaults import PLANS, Finish, build_defaults
from training.recipes import DEFAULT_RECIPES


@pytest.mark.slow
def test_offline_defaults_train_finish_at_the_served_size_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier, segmentor, pose = DEFAULT_RECIPES
    tiny = {
        classifier: replace(
            PLANS[classifier],
            n_train=24,
            n_val=12,
            iterations=2,
            batch_size=4,
            finish=Finish(1, 2, 1e-4, 1.0),
        ),
        # lr 0: their backbones stay as loaded, so the test can see where they started.
        segmentor: replace(PLANS[segmentor], n_train=2, n_val=1, iterations=1, batch_size=2, lr=0.0),
        pose: replace(PLANS[pose], n_train=2, n_val=2, iterations=1, batch_size=2, lr=0.0),
    }
    for name, plan in tiny.items():
        monkeypatch.setitem(defaults.PLANS, name, plan)

    written = build_defaults(tmp_path / "models", tmp_path / "work", offline=True)

    assert [folder.parent.name for folder in written] == list(DEFAULT_RECIPES)
    for folder in written:
        card = ModelCard.read(folder / "card.json")
        assert card.weights.source == "trained"
        assert "synthetic" in card.weights.trained_on and "not ImageNet" in (card.weights.note or "")
        assert card.measured_metrics  # measured on held-out synthetic images
    runs = tmp_path / "work/runs"
    # The classifier's low-resolution run skips evaluation; its finish at 224 px evaluates.
    assert "eval" not in (runs / classifier / "log.jsonl").read_text()
    assert "eval" in (runs / classifier / "finish/log.jsonl").read_text()
    classifier_card = ModelCard.read(written[0] / "card.json")
    assert classifier_card.weights.checkpoint == str(runs / classifier / "finish/latest.pth")
    assert "3 iterations" in (classifier_card.weights.note or "")
    # The segmentor's and pose model's backbones started from the finished classifier.
    finished = torch.load(runs / classifier / "finish/latest.pth", weights_only=True)["model"]
    for name in (segmentor, pose):
        started = torch.load(runs / name / "latest.pth", weights_only=True)["model"]
        assert torch.equal(started["backbone.conv1.conv.weight"], finished["backbone.conv1.conv.weight"])

    # A second call finds the models there and builds nothing.
    assert build_defaults(tmp_path / "models", tmp_path / "work", offline=True) == []
