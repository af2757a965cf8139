"""/docs (Swagger UI) driven in headless Chromium: "Try it out" uploads a file for every task.

The browser and its skip logic are the demo page's (tests/app/test_demo_page.py). Each test saves
a screenshot under its pytest tmp dir and prints the path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.app.conftest import RunningServer, encode, scene
from tests.app.test_demo_page import RESULT_TIMEOUT_MS, browser

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

__all__ = ["browser"]  # the fixture, imported to be used here


@pytest.fixture
def docs(browser: Browser, server: RunningServer) -> Iterator[Page]:
    """/docs on the default-recipe server; afterwards: no script error, nothing fetched elsewhere."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requested: list[str] = []
    script_errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=RESULT_TIMEOUT_MS)
    yield page
    context.close()
    assert not script_errors
    assert [url for url in requested if not url.startswith((server.url + "/", "data:", "blob:"))] == []


def operation_id(client: httpx.Client, path: str) -> str:
    operation_id: str = client.get("/openapi.json").json()["paths"][path]["post"]["operationId"]
    return operation_id


@pytest.mark.parametrize("path", ["/v1/classify", "/v1/segment", "/v1/pose"])
def test_try_it_out_uploads_a_file_and_gets_200(
    docs: Page,
    client: httpx.Client,
    path: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(encode(scene(320, 240, seed=2), "JPEG", quality=90))
    operation = docs.locator(f"#operations-v1-{operation_id(client, path)}")
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()

    body = operation.locator(".opblock-section-request-body")
    assert body.locator("select.content-type").input_value() == "multipart/form-data"
    picker = body.locator('tr[data-property-name="file"] input[type="file"]')
    assert picker.count() == 1  # a file picker, not the text box FastAPI's schema got
    picker.set_input_files(str(photo))
    if path == "/v1/pose":  # the boxes are typed as text, left empty here: the whole image
        assert body.locator('tr[data-property-name="boxes"] input[type="text"]').count() == 1
    operation.locator(".execute").click()

    status = operation.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for(timeout=RESULT_TIMEOUT_MS)
    shot = tmp_path / f"docs-{path.rsplit('/', 1)[-1]}.png"
    operation.screenshot(path=str(shot))  # the operation only: the whole page is 10,000 px tall
    with capsys.disabled():
        print(f"\nscreenshot: {shot}")
    answer = operation.locator(
        ".live-responses-table tr.response .response-col_description"
    ).first.inner_text()
    curl = operation.locator(".curl").inner_text()
    assert status.inner_text().strip() == "200", curl + answer[:500]
    assert "file=@photo.jpg;type=image/jpeg" in curl  # the file itself, not its name as text
