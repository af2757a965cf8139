"""`python -m training defaults` offline: three models trained on synthetic data, with honest cards."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from contract.card import ModelCard
from training import defaults
from training.defaults import PLANS, Finish, _training_seconds, build_defaults
from training.recipes import DEFAULT_RECIPES


@pytest.mark.slow
def test_offline_defaults_train_finish_at_the_served_size_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier, segmentor, pose = DEFAULT_RECIPES
    tiny = {
        # Iterations so slow on paper that each phase plans one.
        classifier: replace(
            PLANS[classifier],
            n_train=24,
            n_val=12,
            seconds_per_iteration=1e6,
            batch_size=4,
            finish=Finish(share=0.3, batch_size=2, lr=1e-4, seconds_per_iteration=1e6),
        ),
        # lr 0: their backbones stay as loaded, so the test can see where they started.
        segmentor: replace(
            PLANS[segmentor], n_train=2, n_val=1, seconds_per_iteration=1e6, batch_size=2, lr=0.0
        ),
        pose: replace(PLANS[pose], n_train=2, n_val=2, seconds_per_iteration=1e6, batch_size=2, lr=0.0),
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
    assert "2 iterations" in (classifier_card.weights.note or "")
    # The segmentor's and pose model's backbones started from the finished classifier.
    finished = torch.load(runs / classifier / "finish/latest.pth", weights_only=True)["model"]
    for name in (segmentor, pose):
        started = torch.load(runs / name / "latest.pth", weights_only=True)["model"]
        assert torch.equal(started["backbone.conv1.conv.weight"], finished["backbone.conv1.conv.weight"])

    # A second call finds the models there and builds nothing.
    assert build_defaults(tmp_path / "models", tmp_path / "work", offline=True) == []


def test_each_plan_gets_its_share_of_what_the_budget_leaves_after_every_reserve() -> None:
    classifier, segmentor, pose = DEFAULT_RECIPES
    reserve_s = 60 * sum(PLANS[n].reserve_minutes for n in DEFAULT_RECIPES)
    shares = sum(PLANS[n].share for n in DEFAULT_RECIPES)
    left_s = 15 * 60.0
    assert _training_seconds(classifier, list(DEFAULT_RECIPES), left_s) == pytest.approx(
        (left_s - reserve_s) * PLANS[classifier].share / shares
    )
    # The last plan takes all that is left but its own reserve; a spent budget still trains a little.
    assert _training_seconds(pose, [pose], 400.0) == pytest.approx(400.0 - 60 * PLANS[pose].reserve_minutes)
    assert _training_seconds(segmentor, [segmentor, pose], 10.0) == defaults.MIN_TRAINING_SECONDS
