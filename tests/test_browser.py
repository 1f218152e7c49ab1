"""The HTML reports in a real headless browser (Debian's ``chromium``; .ci/run installs it):
the page loads with the network cut off, every plot renders, and the console stays silent.

Chromium runs with ``--dump-dom`` (the DOM after the page's scripts ran, within a virtual-time
budget) and ``--enable-logging=stderr``, which writes every console message (``console.error``,
an uncaught exception) as a ``:CONSOLE`` line. A proxy that points nowhere stands for no
network: a page that fetched plotly.js from a CDN would render no plot.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")

RENDERED = re.compile(r'<div[^>]*class="[^"]*\bjs-plotly-plot\b[^"]*"')
PLOT_DIVS = re.compile(r'class="plotly-graph-div"')


def open_in_chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and its console messages."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", "--proxy-server=http://127.0.0.1:9",
         "--proxy-bypass-list=<-loopback>", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=15000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def check_page(page: Path, profile: Path, plots: int) -> None:
    source = page.read_text()
    assert len(PLOT_DIVS.findall(source)) == plots
    assert not re.search(r"<script[^>]+src=", source), "a script loaded from elsewhere"
    dom, console = open_in_chromium(page, profile)
    assert console == []
    assert len(RENDERED.findall(dom)) == plots      # every plot div was drawn by plotly.js
    assert dom.count('class="main-svg"') >= plots   # ... into an SVG


def test_the_checker_sees_console_errors_and_plots_that_do_not_render(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><div class="plotly-graph-div"></div>'
                   '<script>undefinedFunction();</script></body></html>')
    dom, console = open_in_chromium(bad, tmp_path / "profile")
    assert any("undefinedFunction is not defined" in line for line in console)
    assert RENDERED.findall(dom) == []


def test_the_sizes_report_renders_offline(fake_worker, write_config, tmp_path, capsys,
                                          monkeypatch):
    from test_sizing import SIZED

    monkeypatch.setenv("FAKE_SHAPE", "flat")
    monkeypatch.setenv("FAKE_SCALING", "saturating")
    path = write_config(SIZED)
    code, _, err = run_cli(capsys, "size", "--config", str(path), "--cpus", "1,2",
                           "--target-throughput", "3000", "--cpu-hour-price", "0.05", "--quiet")
    assert code == 0, err
    page = tmp_path / "sizes.html"
    code, _, err = run_cli(capsys, "report", "results/study/sizes.yaml", "--html", str(page))
    assert code == 0, err
    check_page(page, tmp_path / "profile", plots=2)


def test_the_study_report_renders_offline(small_study, tmp_path, capsys):
    page = tmp_path / "report.html"
    code, _, err = run_cli(capsys, "report", "--storage", "sqlite:///results/study.db",
                           "--html", str(page))
    assert code == 0, err
    plots = len(PLOT_DIVS.findall(page.read_text()))
    assert plots >= 3   # history, heatmap, saturation (importances when they can be computed)
    check_page(page, tmp_path / "profile", plots=plots)
