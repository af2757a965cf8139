"""The README's client examples, run as written against a real server (only the host and the file
swapped in): a client of the raw tensors must preprocess as the model's card says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import encode, scene

ROOT = Path(__file__).resolve().parents[2]


def readme_block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    return next(block for block in blocks if containing in block)


def test_readme_triton_client_example_gets_the_scores_of_v1_classify(
    client: httpx.Client, tmp_path: Path, names: dict[str, str]
) -> None:
    pytest.importorskip("tritonclient.http")
    photo = tmp_path / "cat.png"
    photo.write_bytes(encode(scene(400, 300, seed=5)))  # wider than high: the crop matters
    code = readme_block("tritonclient.http").replace("cat.jpg", str(photo))
    code = code.replace("localhost:8000", str(client.base_url).removeprefix("http://").rstrip("/"))
    assert names["classification"] in code
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})  # the README's own example, as written
    # Triton's classification extension: "score:index:label" per class, best first.
    found = re.findall(r"b?'([0-9.e-]+):(\d+):", printed.getvalue())
    served = client.post("/v1/classify", files={"file": ("cat.png", photo.read_bytes(), "image/png")})
    expected = served.json()["results"][0]["predictions"]
    assert [int(index) for _, index in found] == [p["index"] for p in expected]
    for (score, _), prediction in zip(found, expected, strict=True):
        assert float(score) == pytest.approx(prediction["score"], abs=2e-4)
