"""The model repository: `<root>/<name>/<version>/{model.onnx, card.json}`.

Training writes it (`write_version`), the service, the Triton export and the benchmark read it.
A version is a folder named by ASCII digits alone (`7`, not `²` or `٧`); folders starting with a
dot are someone's staging area and never a model. Names are looked up by listing the folder,
never joined into paths from what a client sent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"


def is_version_name(name: str) -> bool:
    """True for a folder name that is a version number: ASCII digits only."""
    return name.isascii() and name.isdigit()


def parse_version(text: str) -> int:
    """A version written by a person (`MODELS=name:3`, `?version=3`) → its number.

    Raises `ValueError` for anything but ASCII digits: `int()` would also take `٣`, ` 3` or `+3`.
    """
    if not is_version_name(text):
        raise ValueError(f"a version is a number written in ASCII digits, not {text[:40]!r}")
    return int(text)


def parse_model_spec(spec: str) -> tuple[str, int | None]:
    """`name` or `name:version` → (name, version or None for the newest). Raises `ValueError`."""
    name, colon, version = spec.partition(":")
    if not name:
        raise ValueError(f"no model name in {spec[:80]!r}")
    return name, parse_version(version) if colon else None


def model_dirs(root: Path) -> dict[str, Path]:
    """name → folder of every model in the repository (empty when `root` cannot be listed)."""
    with suppress(OSError):
        return {p.name: p for p in sorted(Path(root).iterdir()) if p.is_dir() and not p.name.startswith(".")}
    return {}


def versions(model_dir: Path) -> list[int]:
    """The version numbers of a model folder, ascending."""
    with suppress(OSError):
        return sorted(
            int(p.name) for p in Path(model_dir).iterdir() if is_version_name(p.name) and p.is_dir()
        )
    return []


def is_complete(version_dir: Path) -> bool:
    """Both files of a version are there (a folder being copied in by hand may not be yet)."""
    return (version_dir / MODEL_FILE).is_file() and (version_dir / CARD_FILE).is_file()


@dataclass(frozen=True)
class ModelVersion:
    """One version folder of one model."""

    name: str
    version: int
    path: Path

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def card_file(self) -> Path:
        return self.path / CARD_FILE


def complete_versions(model_dir: Path) -> list[ModelVersion]:
    """The versions of a model that hold both files, ascending."""
    model_dir = Path(model_dir)
    found = (ModelVersion(model_dir.name, v, model_dir / str(v)) for v in versions(model_dir))
    return [found_version for found_version in found if is_complete(found_version.path)]


def newest_versions(root: Path, names: list[str] | None = None) -> list[ModelVersion]:
    """The newest complete version of every model (or of those named), by name."""
    newest = []
    for name, model_dir in model_dirs(root).items():
        if names and name not in names:
            continue
        found = complete_versions(model_dir)
        if found:
            newest.append(found[-1])
    return newest


def next_version(model_dir: Path) -> int:
    return max(versions(model_dir), default=0) + 1


@contextmanager
def write_version(root: Path, name: str) -> Iterator[tuple[Path, int]]:
    """Stage a new version of `name`: yields (staging folder, version number) to write into.

    When the block ends without an exception the folder is renamed to `<root>/<name>/<version>`
    in one step, so a reader never sees a half-written version; otherwise nothing appears.
    """
    model_dir = Path(root) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        version = next_version(model_dir)
        yield staging, version
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the service may run as another user
        staging.rename(model_dir / str(version))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
