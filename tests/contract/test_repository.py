from __future__ import annotations

from pathlib import Path

import pytest

from contract import repository
from contract.repository import CARD_FILE, MODEL_FILE


def _version(root: Path, name: str, version: str, complete: bool = True) -> Path:
    folder = root / name / version
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(b"onnx")
    if complete:
        (folder / CARD_FILE).write_text("{}")
    return folder


def test_versions_are_ascii_digit_folders_only(tmp_path: Path) -> None:
    for name in ("1", "10", "2", "²", "١", "+3", " 4", ".staging-x", "latest"):
        (tmp_path / "m" / name).mkdir(parents=True)
    (tmp_path / "m" / "7").write_text("a file, not a version")
    assert repository.versions(tmp_path / "m") == [1, 2, 10]


@pytest.mark.parametrize("text", ["²", "١", "+3", " 3", "3 ", "", "-1", "1.0"])
def test_parse_version_refuses_what_is_not_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError, match="ASCII digits"):
        repository.parse_version(text)


def test_model_spec_names_a_version_or_the_newest() -> None:
    assert repository.parse_model_spec("cls") == ("cls", None)
    assert repository.parse_model_spec("cls:12") == ("cls", 12)
    with pytest.raises(ValueError):
        repository.parse_model_spec("cls:latest")
    with pytest.raises(ValueError):
        repository.parse_model_spec(":3")


def test_newest_versions_skip_incomplete_and_hidden_folders(tmp_path: Path) -> None:
    _version(tmp_path, "a", "1")
    _version(tmp_path, "a", "2")
    _version(tmp_path, "a", "3", complete=False)  # being copied in by hand
    _version(tmp_path, "b", "5", complete=False)
    _version(tmp_path, ".hidden", "1")
    newest = repository.newest_versions(tmp_path)
    assert [(v.name, v.version) for v in newest] == [("a", 2)]
    assert newest[0].card_file == tmp_path / "a" / "2" / CARD_FILE
    assert repository.newest_versions(tmp_path, ["b"]) == []
    assert repository.model_dirs(tmp_path / "missing") == {}


def test_write_version_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    _version(tmp_path, "a", "4")
    with repository.write_version(tmp_path, "a") as (staging, version):
        assert version == 5
        assert not (tmp_path / "a" / "5").exists()  # nothing visible while it is written
        (staging / MODEL_FILE).write_bytes(b"onnx")
    assert (tmp_path / "a" / "5" / MODEL_FILE).read_bytes() == b"onnx"
    assert (tmp_path / "a" / "5").stat().st_mode & 0o777 == 0o755

    with pytest.raises(RuntimeError), repository.write_version(tmp_path, "a") as (staging, version):
        (staging / MODEL_FILE).write_bytes(b"half")
        raise RuntimeError("parity failed")
    assert repository.versions(tmp_path / "a") == [4, 5]
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")] == []
