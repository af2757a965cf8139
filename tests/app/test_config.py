"""Settings come from environment variables named like the fields; `--help` lists them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_environment_variables_are_the_field_names_upper_cased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("MODELS", "a, b:2")
    monkeypatch.setenv("WARMUP_BATCH_SIZES", "[1, 2]")
    monkeypatch.setenv("POSE_FLIP_TEST", "true")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert settings.max_batch_size == 3
    assert settings.models == ["a", "b:2"]
    assert settings.warmup_batch_sizes == [1, 2]
    assert settings.pose_flip_test is True
    assert settings.log_level == "debug"


def test_warmup_sizes_beyond_the_batch_limit_are_refused() -> None:
    with pytest.raises(ValueError, match="WARMUP_BATCH_SIZES"):
        Settings(max_batch_size=2, warmup_batch_sizes=[4])


def test_help_lists_every_setting_with_its_default_and_description() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    for name, field in Settings.model_fields.items():
        assert f"{name.upper()}=" in result.stdout
        assert field.description and field.description in result.stdout
    assert "MAX_QUEUE_DELAY_MS=5.0" in result.stdout
