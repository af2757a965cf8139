"""The demo page at `/`, driven in headless Chromium against a real server.

The browser is Debian's `chromium` (installed by `.ci/run`), driven by Playwright; the tests that
need it are skipped, saying why, where neither can be had. Each browser test saves a screenshot
under its pytest tmp dir and prints the path.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from tests.app.conftest import RunningServer, encode, scene, serve
from tests.app.tiny_models import LABELS, write_classifier

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# This machine's closed network refuses Chromium's background connections; these flags stop them.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESULT_TIMEOUT_MS = 30_000  # the segmentation model takes ~2 s on 2 cores; leave room for a slow CI


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (it is in the `dev` extra)"
    )
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium binary (.ci/run installs Debian's `chromium` where apt-get can)")
    with sync_api.sync_playwright() as playwright:
        # Never `playwright install`: it downloads a browser. The system one is driven instead.
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def opened_page(browser: Browser, server: RunningServer, width: int = 1280) -> Iterator[Page]:
    """The page at the server's root; afterwards: no script error, nothing fetched elsewhere."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    opened = context.new_page()
    requested: list[str] = []
    script_errors: list[str] = []
    opened.on("request", lambda request: requested.append(request.url))
    opened.on("pageerror", lambda error: script_errors.append(str(error)))
    opened.goto(server.url + "/")
    yield opened
    context.close()
    assert not script_errors
    local = (server.url + "/", "data:", "blob:")
    assert [url for url in requested if not url.startswith(local)] == []


@pytest.fixture
def page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    """The page on the default-recipe server, its model list filled."""
    with opened_page(browser, server) as opened:
        opened.wait_for_selector("#model option[value]", state="attached")
        yield opened


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(scene(480, 360, seed=4), "JPEG", quality=90)


def screenshot(page: Page, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / f"demo-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    with capsys.disabled():  # shown even under pytest's output capture
        print(f"\nscreenshot: {path}")
    return path


def wait_for_answer(page: Page, task: str) -> None:
    page.wait_for_selector(f'#result[data-task="{task}"]:not([hidden])', timeout=RESULT_TIMEOUT_MS)


def api_answer(client: httpx.Client, endpoint: str, photo: bytes) -> Any:
    response = client.post(endpoint, files={"file": ("photo.jpg", photo, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def test_root_serves_the_page_outside_the_openapi_schema(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="docs"' in page.text and "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/demo.js").headers["content-type"].startswith("text/javascript")
    missing = client.get("/static/main.py")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/static") for path in paths)


def test_page_shows_the_top5_labels_as_bars_with_scores(
    page: Page,
    client: httpx.Client,
    photo: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "photo.jpg").write_bytes(photo)
    page.set_input_files("#file", str(tmp_path / "photo.jpg"))  # classification is the first task
    wait_for_answer(page, "classification")
    screenshot(page, tmp_path, "classification", capsys)

    expected = api_answer(client, "/v1/classify", photo)["results"][0]["predictions"]
    assert page.locator(".bars .label").all_inner_texts() == [p["label"] for p in expected]
    assert page.locator(".bars .fill").count() == 5
    assert "inference" in page.inner_text("#timing")


def test_page_draws_the_segmentation_mask_with_a_legend_of_the_classes_present(
    page: Page,
    client: httpx.Client,
    photo: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    page.select_option("#task", "segmentation")
    (tmp_path / "photo.jpg").write_bytes(photo)
    page.set_input_files("#file", str(tmp_path / "photo.jpg"))
    wait_for_answer(page, "segmentation")

    classes = api_answer(client, "/v1/segment", photo)["results"][0]["classes"]
    listed = [c for c in classes if c["fraction"] >= 0.00005]  # the others would read "0.00 %"
    assert page.locator(".legend .label").all_inner_texts() == [c["label"] for c in listed]
    assert page.locator(".legend .swatch").count() == len(listed)
    assert "0.00 %" not in page.inner_text(".legend")
    page.hover("#canvas")  # the middle of the mask: the tooltip names the class under the pointer
    screenshot(page, tmp_path, "segmentation", capsys)  # after the hover: the tooltip shows
    assert page.inner_text("#tip").split(" · ")[0] in {c["label"] for c in classes}


def test_page_draws_the_pose_skeleton_with_keypoint_scores_on_hover(
    page: Page,
    client: httpx.Client,
    photo: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    page.select_option("#task", "pose")
    drop_file(page, "photo.jpg", photo)  # this time the drag-and-drop way
    wait_for_answer(page, "pose")

    answer = api_answer(client, "/v1/pose", photo)
    keypoints = answer["people"][0]["keypoints"]
    assert page.locator("table.keypoints tr").count() == len(keypoints) == 17
    # The page draws by the service's threshold, the one overlay=true draws by (default 0.3).
    threshold = answer["keypoint_threshold"]
    drawn = sum(k["score"] >= threshold for k in keypoints)
    assert threshold == 0.3
    assert f"1 person · 17 keypoints · {drawn} drawn (score ≥ {threshold})" in page.inner_text("#details h2")
    assert page.locator("table.keypoints tr.not-drawn").count() == 17 - drawn

    target = isolated_keypoint_inside(keypoints, answer["image"])
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    scale = box["width"] / answer["image"]["width"]
    page.mouse.move(box["x"] + (target["x"] + 0.5) * scale, box["y"] + (target["y"] + 0.5) * scale)
    screenshot(page, tmp_path, "pose", capsys)
    assert page.inner_text("#tip").startswith(f"{target['name']} · score {target['score']:.3f}")


def test_page_shows_the_api_error_message(
    page: Page, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("not an image\n")
    page.set_input_files("#file", str(tmp_path / "notes.txt"))
    page.wait_for_selector("#error:not([hidden])", timeout=RESULT_TIMEOUT_MS)
    screenshot(page, tmp_path, "error", capsys)

    shown = page.inner_text("#error")
    assert "HTTP 415 not_an_image" in shown
    assert "the bytes are not an image" in shown  # the API's own message
    assert "request ID" in shown
    assert page.is_hidden("#result") and page.is_hidden("#key-field")  # no key asked of an open service


def test_page_asks_for_an_api_key_when_the_service_wants_one_and_sends_it(
    browser: Browser, photo: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_classifier(tmp_path / "repository", "tiny", 1)  # loads in milliseconds
    (tmp_path / "photo.jpg").write_bytes(photo)
    with serve(tmp_path / "repository", api_keys=["demo-key"]) as keyed, opened_page(browser, keyed) as page:
        page.wait_for_selector("#error:not([hidden])", timeout=RESULT_TIMEOUT_MS)
        assert "GET v1/models → HTTP 401 unauthorized" in page.inner_text("#error")
        screenshot(page, tmp_path, "api-key-asked", capsys)
        page.fill("#key", "demo-key")
        page.press("#key", "Tab")  # `change`: the page reloads the models with the key
        page.wait_for_selector('#model option[value="tiny"]', state="attached")
        page.set_input_files("#file", str(tmp_path / "photo.jpg"))
        wait_for_answer(page, "classification")
        screenshot(page, tmp_path, "api-key", capsys)

        assert set(page.locator(".bars .label").all_inner_texts()) <= set(LABELS)
        assert "Bearer $API_KEY" in page.text_content("#curl")  # the request to copy; never the key
        assert "demo-key" not in page.text_content("#curl")


def test_page_lists_models_that_failed_to_load_with_the_reason_and_flags_unreleased_weights(
    browser: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repository"
    trained = write_classifier(repository, "a-classifier-with-a-rather-long-name-trained-on-shapes", 1)
    card = json.loads((trained / "card.json").read_text())
    card["weights"] = {
        "source": "trained",
        "trained_on": "synthetic-shapes",
        "note": "it knows synthetic shapes",
    }
    (trained / "card.json").write_text(json.dumps(card))
    broken = write_classifier(repository, "broken", 1)
    (broken / "model.onnx").write_bytes(b"not an ONNX file")
    with serve(repository) as running, opened_page(browser, running, width=390) as page:
        page.wait_for_selector("#failed:not([hidden])", timeout=RESULT_TIMEOUT_MS)
        page.wait_for_selector("#weights-banner:not([hidden])", timeout=RESULT_TIMEOUT_MS)
        screenshot(page, tmp_path, "failed-and-banner-390px", capsys)
        reason = httpx.get(running.url + "/v1/models").json()["models"]
        failed = next(m for m in reason if m["name"] == "broken")
        assert failed["state"] == "failed"
        assert "broken" in page.inner_text("#failed") and failed["reason"] in page.inner_text("#failed")
        banner = page.inner_text("#weights-banner")
        assert "it knows synthetic shapes" in banner and "README → Real weights" in banner
        # At 390 px nothing is wider than the window: no sideways scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390


def drop_file(page: Page, name: str, data: bytes) -> None:
    """Drop a file on the drop zone, as a person dragging it from their desktop would."""
    transfer = page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            return transfer;
        }""",
        [name, base64.b64encode(data).decode("ascii")],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def isolated_keypoint_inside(keypoints: list[dict[str, Any]], size: dict[str, int]) -> dict[str, Any]:
    """A keypoint inside the image whose neighbours are far enough that hovering it is unambiguous."""

    def clearance(k: dict[str, Any]) -> float:
        return min(math.hypot(k["x"] - o["x"], k["y"] - o["y"]) for o in keypoints if o is not k)

    inside = [
        k for k in keypoints if 10 <= k["x"] < size["width"] - 10 and 10 <= k["y"] < size["height"] - 10
    ]
    assert inside, "no keypoint inside the image to hover"
    return max(inside, key=clearance)


def test_page_draws_the_detected_boxes_and_finds_the_people_for_pose(
    browser: Browser, pose_and_detector: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bright = encode(np.full((96, 160, 3), 250, np.uint8), "PNG")
    with pose_and_detector.client() as client:
        detected = client.post(
            "/v1/detect?score_threshold=0.3", files={"file": ("bright.png", bright, "image/png")}
        ).json()["results"][0]
        posed = client.post("/v1/pose", files={"file": ("bright.png", bright, "image/png")}).json()
    objects = detected["objects"]
    assert len(objects) >= 2 and posed["boxes"] == "detector" and posed["people"]

    with opened_page(browser, pose_and_detector) as page:
        page.select_option("#task", "detection")  # the first task, classification, has no model here
        page.wait_for_selector("#model option[value]", state="attached")
        page.set_input_files(
            "#file", files=[{"name": "bright.png", "mimeType": "image/png", "buffer": bright}]
        )
        wait_for_answer(page, "detection")
        assert page.inner_text("#details h2") == f"{len(objects)} objects scoring above 0.3"
        labels = page.locator("ol.bars li .label").all_inner_texts()
        assert labels == [o["label"] for o in objects]  # highest score first, as the API lists them

        # Hovering a box's centre names the smallest box there, as the page's tooltip promises.
        target = objects[0]
        x, y = (target["box"][0] + target["box"][2]) / 2, (target["box"][1] + target["box"][3]) / 2
        under = [o for o in objects if o["box"][0] <= x < o["box"][2] and o["box"][1] <= y < o["box"][3]]
        smallest = min(under, key=lambda o: (o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1]))
        box = page.locator("#canvas").bounding_box()
        assert box is not None
        scale = box["width"] / detected["image"]["width"]
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        screenshot(page, tmp_path, "detection", capsys)
        assert page.inner_text("#tip").startswith(f"{smallest['label']} · score {smallest['score']:.3f}")

        # Pose without boxes: the detector's people, each captioned with its detector score.
        page.select_option("#task", "pose")
        wait_for_answer(page, "pose")
        assert "People found by the detector tiny-detector" in page.inner_text("#details")
        captions = page.locator("table.keypoints caption").all_inner_texts()
        assert len(captions) == len(posed["people"])
        assert f"detector score {posed['people'][0]['box_score']:.3f}" in captions[0]
        screenshot(page, tmp_path, "pose-detector", capsys)
