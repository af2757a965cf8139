"""`python -m training`: answers --help without importing torch, explains every option, and
reports failures in one line."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from training.__main__ import build_parser
from training.__main__ import main as training_cli
from training.engine import shortened
from training.recipes import get_recipe


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from training.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['export', '--help'])\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_option_of_every_command_has_help() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in commands.items()
        for action in sub._actions
        if action.help is None and not isinstance(action, argparse._HelpAction)
    ]
    assert missing == []


def test_an_unreachable_checkpoint_url_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    url = "http://127.0.0.1:9/mobilenet_v2_batch256_imagenet_20200708-3b2dc3af.pth"
    assert (
        training_cli(["export", "mobilenet-v2_8xb32_in1k", "--checkpoint", url, "--out", "/nonexistent"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot download") and "\n" not in err


def test_a_shortened_run_shortens_its_warm_up() -> None:
    row = get_recipe("td-hm_mobilenetv2_8xb64-210e_coco-256x192").schedule  # 500 warm-up iterations
    assert shortened(row, total=3, row_total=100_000).warmup_iterations == 1
    assert shortened(row, total=10_000, row_total=100_000).warmup_iterations == 50
    assert shortened(row, total=100_000, row_total=100_000) == row
