"""`python -m training defaults` offline: four models trained on synthetic data, with honest cards."""

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
    classifier, segmentor, pose, detector = DEFAULT_RECIPES
    tiny = {
        classifier: replace(
            PLANS[classifier],
            n_train=24,
            n_val=12,
            iterations=1,
            batch_size=4,
            finish=Finish(iterations=1, batch_size=2, lr=1e-4, seconds_per_iteration=1.0),
        ),
        # lr 0: their backbones stay as loaded, so the test can see where they started.
        segmentor: replace(PLANS[segmentor], n_train=2, n_val=1, iterations=1, batch_size=2, lr=0.0),
        pose: replace(PLANS[pose], n_train=2, n_val=2, iterations=1, batch_size=2, lr=0.0),
        detector: replace(PLANS[detector], n_train=2, n_val=2, iterations=1, batch_size=2, lr=0.0),
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
    # The other three backbones started from the finished classifier (the detector's under mmdet's names).
    finished = torch.load(runs / classifier / "finish/latest.pth", weights_only=True)["model"]
    for name in (segmentor, pose, detector):
        started = torch.load(runs / name / "latest.pth", weights_only=True)["model"]
        assert torch.equal(started["backbone.conv1.conv.weight"], finished["backbone.conv1.conv.weight"])
    detector_started = torch.load(runs / detector / "latest.pth", weights_only=True)["model"]
    assert torch.equal(
        detector_started["backbone.layer2.0.depthwise_conv.conv.weight"],
        finished["backbone.layer2.0.conv.1.conv.weight"],
    )

    # A second call finds the models there and builds nothing.
    assert build_defaults(tmp_path / "models", tmp_path / "work", offline=True) == []


def test_a_minutes_cap_cuts_the_plans_iterations_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    classifier = DEFAULT_RECIPES[0]
    # 50 planned iterations at 10 s each on paper; a 0.5-minute cap (30 s, no reserve) leaves 3.
    plan = replace(
        PLANS[classifier],
        n_train=8,
        n_val=4,
        iterations=50,
        batch_size=2,
        seconds_per_iteration=10.0,
        reserve_minutes=0.0,
        finish=None,
        train_size=(32, 32),
    )
    monkeypatch.setitem(defaults.PLANS, classifier, plan)
    monkeypatch.setattr(defaults, "DEFAULT_RECIPES", (classifier,))
    [folder] = build_defaults(tmp_path / "models", tmp_path / "work", offline=True, minutes=0.5)
    out = capsys.readouterr().out
    assert "capped at 0.5 min" in out and "of 50 planned iterations" in out
    note = ModelCard.read(folder / "card.json").weights.note or ""
    assert "trained 3 iterations" in note


def test_training_twice_with_the_same_plan_gives_the_same_weights(tmp_path: Path) -> None:
    from training.data.synthetic import generate
    from training.defaults import synthetic_recipe
    from training.engine import TrainOptions, train
    from training.recipes import get_recipe

    data = generate("classification", tmp_path / "shapes", n_train=16, n_val=4, seed=1)
    recipe = synthetic_recipe(get_recipe(DEFAULT_RECIPES[0]), data)
    weights = []
    for run in ("a", "b"):
        options = TrainOptions(
            data=data,
            run_dir=tmp_path / run,
            iterations=3,
            batch_size=4,
            lr=1e-3,
            train_size=(32, 32),
            workers=2,
            evaluate=False,
        )
        weights.append(train(recipe, options).model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["head.fc.weight"], recipe.build().state_dict()["head.fc.weight"])


def test_each_plan_gets_its_share_of_what_the_budget_leaves_after_every_reserve() -> None:
    classifier, segmentor, pose, _ = DEFAULT_RECIPES
    reserve_s = 60 * sum(PLANS[n].reserve_minutes for n in DEFAULT_RECIPES)
    shares = sum(PLANS[n].share for n in DEFAULT_RECIPES)
    left_s = 15 * 60.0
    assert _training_seconds(classifier, list(DEFAULT_RECIPES), left_s) == pytest.approx(
        (left_s - reserve_s) * PLANS[classifier].share / shares
    )
    # The last plan takes all that is left but its own reserve; a spent budget still trains a little.
    assert _training_seconds(pose, [pose], 400.0) == pytest.approx(400.0 - 60 * PLANS[pose].reserve_minutes)
    assert _training_seconds(segmentor, [segmentor, pose], 10.0) == defaults.MIN_TRAINING_SECONDS
