"""The HTML report in a real headless browser (Debian's chromium, driven by Playwright); a screenshot is kept."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xai_onnx import IntegratedGradients, Model, Occlusion
from xai_onnx.html import render

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("XAI_ONNX_SCREENSHOTS", ROOT / "tests" / "screenshots"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TEXTS = ["a very good fun movie", "the movie very dull a"]


@pytest.fixture(scope="module")
def results(handmade):
    model = Model(handmade[0])
    return [r for ex in (IntegratedGradients(model), Occlusion(model)) for r in ex.explain(TEXTS)]


def test_html_is_self_contained(results):
    page = render(results)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for r in results:
        for s in r.scores:
            assert f'data-score="{float(s):.8g}"' in page
    assert page.count('class="card"') == len(TEXTS) and page.count('class="method"') == len(results)
    assert results[0].to_html().count('class="card"') == 1


def test_html_escapes_text(handmade):
    page = Occlusion(Model(handmade[0])).explain(["<script>alert(1)</script> good"])[0].to_html()
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_in_a_real_browser(results, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")
    page_file = tmp_path / "report.html"
    page_file.write_text(render(results, title="browser test"), encoding="utf-8")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(page_file.as_uri())
        assert page.locator("#legend").is_visible()
        cards = page.locator(".card")
        assert cards.count() == len(TEXTS)
        for i, text in enumerate(TEXTS):
            card = cards.nth(i)
            assert card.locator(".method").count() == 2
            shown = card.locator(".method").first.locator(".tok").all_inner_texts()
            assert shown == ["[CLS]", *text.split(), "[SEP]"]
        tokens = page.locator(".tok")
        colours = tokens.evaluate_all(
            "els => els.map(e => [parseFloat(e.dataset.score), getComputedStyle(e).backgroundColor, e.title])")
        pos = {c for s, c, _ in colours if s > 0}
        neg = {c for s, c, _ in colours if s < 0}
        assert pos and neg and not (pos & neg)  # towards and against the target never share a colour
        for s, _, title in colours:
            assert f"{s:+.6g}"[:5] in title  # the exact score on hover
        page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)
        browser.close()
    assert (SCREENSHOTS / "report.png").stat().st_size > 1000


def test_cli_html(handmade, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xai_onnx.cli", "explain", str(handmade[0]), "--text", *TEXTS,
                           "--method", "ig,occlusion,fd", "--format", "html"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("<!DOCTYPE html>") and proc.stdout.count('class="method"') == 6
    scores = [float(x) for x in re.findall(r'data-score="([^"]+)"', proc.stdout)]
    assert len(scores) == 3 * (7 + 7) and np.isfinite(scores).all()
