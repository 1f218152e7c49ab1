"""``report``: the terminal summary and the offline HTML page of a real (fake-worker) study."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import run_cli

from tuner import config
from tuner.search import pipeline as search


def test_report_html_is_one_offline_file_with_its_plots(small_study, capsys, tmp_path):
    code, out, err = run_cli(capsys, "report", "--storage", "sqlite:///results/study.db",
                             "--study-name", "study", "--html", "report.html")
    assert code == 0, err
    # the terminal gets the trial table, best vs baseline vs expert, and importances
    assert re.search(r"^0\s+baseline\s+COMPLETE", out, re.MULTILINE)
    assert re.search(r"^1\s+expert\s+COMPLETE", out, re.MULTILINE)
    assert "best vs baseline vs expert rule" in out and "\nbaseline " in out
    assert re.search(r"^validated: tuned \(intra=.*\): 1\.\d+x", out, re.MULTILINE)
    assert "parameter importances (PED-ANOVA" in out
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=", page), "the report loads a script"
    assert not re.search(r"<link[^>]+href=[\"']?http", page)
    assert page.count("plotly.js v") == 1  # the bundle, inline, once
    assert page.count("Plotly.newPlot(") == 4
    for title in ("Optimisation history", "Parameter importances",
                  "Throughput over intra-op x inter-op threads", "CPU saturation vs throughput",
                  "Trials"):
        assert f"<h2>{title}</h2>" in page
    assert "Optimization History Plot" in page and "Hyperparameter Importances" in page
    assert '"type":"heatmap"' in page and '"type":"scatter"' in page
    assert page.count("<tr class=COMPLETE>") + page.count('<tr class="COMPLETE">') >= 5
    assert oct((tmp_path / "report.html").stat().st_mode & 0o777) == "0o644"


def test_report_notes_missing_importances_instead_of_failing(fake_worker, write_config, capsys,
                                                             monkeypatch):
    # the expert rule (intra=2) crashes: one complete trial, nothing to rank
    monkeypatch.setenv("FAKE_BEHAVIOUR", "crash-intra-2")
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 2"))
    search.run(config.load(path), lambda line: None)
    code, out, err = run_cli(capsys, "report", "--storage", "sqlite:///results/study.db",
                             "--html", "r.html")
    assert code == 0, err
    assert re.search(r"^1\s+expert\s+FAIL", out, re.MULTILINE)
    assert out.rstrip().endswith("parameter importances: parameter importances need at least "
                                 "2 complete trials (1 here)\nwrote r.html")
    page = Path("r.html").read_text()
    assert ("<h2>Parameter importances</h2><p class=note>parameter importances need at least 2 "
            "complete trials (1 here)</p><h2>") in page
    assert page.count("Plotly.newPlot(") == 3   # the history, the heatmap, the scatter


def test_unknown_study_lists_the_available_ones(small_study, capsys):
    code, _, err = run_cli(capsys, "report", "--storage", "sqlite:///results/study.db",
                           "--study-name", "nope")
    assert code == 2
    assert err == ("error: --study-name: no study 'nope' in sqlite:///results/study.db; "
                   "available: study\n")
    code, _, err = run_cli(capsys, "report", "--storage", "sqlite:///results/study.db",
                           "--study-name", "stduy")
    assert code == 2
    assert err == ("error: --study-name: no study 'stduy' in sqlite:///results/study.db (did you "
                   "mean 'study'?); available: study\n")


def test_a_study_another_tool_made_reads_without_none_or_a_contradiction(capsys):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    Path("results").mkdir()
    study = optuna.create_study(study_name="foreign", storage="sqlite:///results/foreign.db")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    code, out, err = run_cli(capsys, "report", "--storage", "sqlite:///results/foreign.db")
    assert code == 0, err
    assert "2 complete" in out
    assert "no complete trial yet" not in out
    assert "none of the 2 complete trials carries tuner's measurements" in out
    assert "None" not in out
    assert "workload: not recorded" in out
