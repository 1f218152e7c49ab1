"""``report``: the terminal summary and the offline HTML page of a real (fake-worker) study."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import (
    run_cli,
)

from tuner import (
    config,
    search,
)


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
    # every trial the same settings but the references: nothing to rank
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 2") +
                    "space:\n  intra_op_parallelism_threads: [0, 2]\n"
                    "  inter_op_parallelism_threads: [0, 2]\n"
                    "  tf_data: {private_threadpool_size: default, "
                    "max_intra_op_parallelism: default}\n"
                    "  env: {TF_ENABLE_ONEDNN_OPTS: default, TF_XLA_FLAGS: default}\n")
    search.run(config.load(path), lambda line: None)
    code, out, err = run_cli(capsys, "report", "--storage", "sqlite:///results/study.db",
                             "--html", "r.html")
    assert code == 0, err
    assert "parameter importances" in out
    assert "<h2>Parameter importances</h2>" in Path("r.html").read_text()


def test_unknown_study_lists_the_available_ones(small_study, capsys):
    code, _, err = run_cli(capsys, "report", "--storage", "sqlite:///results/study.db",
                           "--study-name", "nope")
    assert code == 2
    assert err == ("error: --study-name: no study 'nope' in sqlite:///results/study.db; "
                   "available: study\n")
