"""Snakemake's own HTML report (`snakemake --report`): every figure and table of the run, with its caption, grouped by
stage; and the page as a browser shows it (Debian's Chromium, driven by playwright)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

CATEGORIES = {"1. Generator", "2. Prior", "3. Results", "4. Theory"}


def build_report(root: Path, dest: Path) -> Path:
    # no --cores: `snakemake --report` must not need one (a rule asking for workflow.cores made it fail)
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--report", str(dest)],
        cwd=root,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return dest


def reported_files(root: Path) -> set[str]:
    """What the report must hold: every figure the run drew and Table 1 (CSV and page) and the paired differences."""
    figures = {str(p.relative_to(root)) for p in (root / "results").rglob("*.png")}
    return figures | {"results/table1.csv", "results/table1.html", "results/paired.csv"}


def caption_words(rst: Path) -> str:
    """The first words of a caption, as they read in the page."""
    return " ".join(rst.read_text().split()[:6])


def show(page, row, path: str, timeout_error: type[Exception]) -> None:
    """Click a result's eye until the report's app shows that result. A CI run once waited 2 min for a figure after
    its click: a click that lands while React re-renders the menu can be lost, so the test waits for the app's own
    state and clicks again, and if the result never shows it says what the app was showing instead."""
    for _ in range(3):
        row.locator("a[iconname=eye]").click()
        try:
            page.wait_for_function("p => app.state.resultPath === p", arg=path, timeout=30_000)
            return
        except timeout_error:
            continue
    state = page.evaluate(
        "({content: app.state.content, resultPath: app.state.resultPath, navbar: app.state.navbarMode})"
    )
    raise AssertionError(f"{path}: three clicks on its eye did not show it; the report showed {state}")


def test_the_report_holds_every_figure_and_table_with_its_caption(tiny_project, tmp_path):
    page = build_report(tiny_project, tmp_path / "report.html").read_text()
    for path in reported_files(tiny_project):
        assert f"filename={Path(path).name}" in page, f"{path} is not in the report"
    captions = sorted((REPO / "workflow" / "report").glob("*.rst"))
    assert len(captions) >= 12
    for rst in captions:
        assert html.escape(caption_words(rst), quote=False) in page or caption_words(rst) in page, (
            f"caption {rst.name} is not in the report"
        )


def test_the_report_shows_every_figure_with_its_caption_in_chromium(tiny_project, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (in the test extra) is not installed")
    report = build_report(tiny_project, tmp_path / "report.html")
    shown: dict[str, tuple[int, int]] = {}  # figure: its decoded width and height
    table_rows = 0
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # Playwright's 30 s default was exceeded once for a figure to appear while another job loaded both cores.
        page.set_default_timeout(120_000)
        page.goto(report.as_uri())
        results = page.evaluate(
            "Object.fromEntries(Object.entries(results).map(([k, v]) => [k, [v.caption, v.mime_type, v.labels.figure]]))"
        )
        categories = page.evaluate("categories")
        assert set(categories) == CATEGORIES
        assert set(results) == reported_files(tiny_project)
        for category, subcategories in categories.items():
            for path in (p for paths in subcategories.values() for p in paths):
                caption, mime, label = results[path]
                page.get_by_text(category, exact=True).first.click()
                row = page.locator("tr", has=page.get_by_text(label, exact=True))
                if mime == "text/csv":  # offered as a download of the file itself
                    assert row.locator("a[iconname=eye]").get_attribute("href").startswith("data:text/csv")
                else:
                    show(page, row, path, sync_api.TimeoutError)
                    if mime == "text/html":
                        table_rows = page.frame_locator("iframe").locator("table tr").count()
                    else:
                        image = page.locator(f'img[src*="filename={Path(path).name}"]')
                        image.wait_for(state="attached")
                        shown[path] = tuple(
                            image.evaluate("i => i.decode().then(() => [i.naturalWidth, i.naturalHeight])")
                        )
                row.locator("a[iconname=information-circle]").click()
                text = " ".join(page.locator("body").inner_text().split())
                words = " ".join(re.sub(r"<[^>]+>", " ", html.unescape(caption)).split())
                assert words and words[:80] in text, f"{path}: caption not shown"
                if mime == "image/png":  # the figure beside its caption, as a reader sees it
                    page.screenshot(path=str(tmp_path / path.replace("/", "-")))
                page.goto(report.as_uri())
        browser.close()
    assert set(shown) == {p for p, (_, mime, _) in results.items() if mime == "image/png"}
    assert all(width > 0 and height > 0 for width, height in shown.values()), shown
    assert table_rows == 1 + 5  # Table 1's page: the header and one row per method
    assert all((tmp_path / p.replace("/", "-")).stat().st_size > 10_000 for p in shown)
