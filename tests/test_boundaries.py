"""The import directions between packages (DESIGN.md), checked two ways.

Statically: every `import` statement of a package's files, at any depth (a lazy import inside a
function counts too). At run time: a fresh interpreter imports every module of the package and
reports which forbidden top-level packages ended up in `sys.modules`, so an import through a
third module (`training` → `contract` → ... → `fastapi`) is caught as well.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WEB = {"fastapi", "starlette", "uvicorn"}
# package → top-level packages it must never import
FORBIDDEN: dict[str, set[str]] = {
    "contract": WEB | {"onnxruntime", "onnx", "torch", "app", "training", "bench"},
    "app": {"torch", "torchvision", "onnx", "training"},
    "training": WEB | {"app"},
}


def imported_packages(source: str) -> set[str]:
    """Top-level names of every absolute import in `source`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def modules_of(package: str) -> list[str]:
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / package).rglob("*.py")
    )


def forbidden_static(package: str) -> dict[str, set[str]]:
    """file → the forbidden packages it imports."""
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        hits = imported_packages(path.read_text(encoding="utf-8")) & FORBIDDEN[package]
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    return bad


_PROBE = """
import importlib, json, sys
modules, forbidden = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
for name in modules:
    if name.endswith("__main__"):
        continue
    importlib.import_module(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & forbidden)))
"""


def forbidden_at_run_time(package: str) -> list[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            json.dumps(modules_of(package)),
            json.dumps(sorted(FORBIDDEN[package])),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_the_static_check_sees_lazy_and_dotted_imports() -> None:
    source = "import os\nfrom fastapi.responses import JSONResponse\ndef f():\n    import torch.nn as nn\n"
    assert imported_packages(source) == {"os", "fastapi", "torch"}
    assert imported_packages("from . import sibling\nfrom .x import y\n") == set()


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_files_import_nothing_forbidden(package: str) -> None:
    assert forbidden_static(package) == {}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_loads_nothing_forbidden(package: str) -> None:
    assert forbidden_at_run_time(package) == []


def test_a_forbidden_import_is_caught() -> None:
    """The check fails when the rule is broken: a contract module that imports the web stack."""
    offender = ROOT / "contract" / "_boundary_probe.py"
    offender.write_text("from app.errors import ServiceError\n", encoding="utf-8")
    try:
        assert forbidden_static("contract") == {"contract/_boundary_probe.py": {"app"}}
        assert set(forbidden_at_run_time("contract")) >= {"app", "fastapi", "starlette"}
    finally:
        offender.unlink()
