"""Machine-readable output and dry runs: ``--format json`` of ``search``, ``size`` and ``report``
(one JSON document on stdout, progress on stderr), ``search --dry-run`` / ``size --dry-run`` (the
plan, in seconds, with no child and nothing written), and ``size --budget``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml
from helpers import FAST, assert_one_error_line, run_cli


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_search_json_is_one_document_carrying_the_whole_tuned_file(fake_worker, write_config,
                                                                   capsys):
    path = write_config()
    code, out, err = run_cli(capsys, "search", "--config", str(path), "--format", "json")
    assert code == 0, err
    doc = json.loads(out)          # stdout is the JSON document and nothing else
    assert doc["schema"] == "tuner.search" and doc["schema_version"] == 1
    assert doc["exit_code"] == 0 and doc["interrupted"] is False
    written = yaml.safe_load(Path(doc["tuned_file"]).read_text())
    # every field of the tuned file, new ones included, is in the document
    assert set(doc["tuned"]) == set(written)
    assert doc["tuned"]["verdict"] == written["verdict"]
    assert doc["tuned"]["settings"] == written["settings"]
    # the progress went to stderr
    assert "preflight" in err and "final round" in err


def test_search_text_summary_is_on_stdout_and_progress_on_stderr(fake_worker, write_config,
                                                                 capsys):
    code, out, err = run_cli(capsys, "search", "--config", str(write_config()))
    assert code == 0, err
    assert out.lstrip().startswith("verdict: ")
    assert "preflight" not in out and "trial " not in out.split("verdict:")[0]
    assert "preflight ok" in err


def test_report_json_parses_and_carries_the_last_result(small_study, capsys):
    code, out, err = run_cli(capsys, "report", "--storage", "sqlite:///results/study.db",
                             "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "tuner.report" and doc["schema_version"] == 1
    assert doc["kind"] == "study" and doc["study"]["name"] == "study"
    assert len(doc["trials"]) == doc["study"]["counts"]["complete"] + sum(
        doc["study"]["counts"][k] for k in ("pruned", "fail", "running", "waiting"))
    complete = [t for t in doc["trials"] if t["state"] == "COMPLETE"]
    assert complete and all("throughput" in t["user_attrs"] for t in complete)
    written = yaml.safe_load(Path(small_study.tuned_path).read_text())
    assert doc["last_result"]["verdict"] == written["verdict"]
    assert set(doc["last_result"]["result"]) == set(written["result"])


def test_search_dry_run_checks_and_plans_without_a_child_or_a_file(write_config, capsys,
                                                                    tmp_path):
    path = write_config()
    before = _listing(tmp_path)
    started = time.monotonic()
    # no fake worker: a child would be a real TensorFlow process, and would fail on wl.py
    code, out, err = run_cli(capsys, "search", "--config", str(path), "--dry-run")
    assert code == 0, err
    assert time.monotonic() - started < 20
    assert out.startswith("dry run: search (nothing started, nothing written)")
    for label in ("space", "sampler", "trials", "validation", "time", "storage", "output"):
        assert f"\n  {label} " in out, out
    assert "8 this run" in out and "a new database" in out and "a new file" in out
    assert err == ""
    assert _listing(tmp_path) == before      # no study database, no results folder


def test_a_dry_run_refuses_what_the_run_would_refuse(write_config, capsys, tmp_path):
    path = write_config()
    (tmp_path / "taken.yaml").mkdir()
    code, _, err = run_cli(capsys, "search", "--config", str(path), "--dry-run",
                           "--output", str(tmp_path / "taken.yaml"))
    assert_one_error_line(code, err, "--output", "is a directory")
    code, _, err = run_cli(capsys, "search", "--config", str(path), "--dry-run",
                           "--storage", "postgresql://u:secret@127.0.0.1:9/none")
    assert code != 0 and err.startswith("error: --storage") and "secret" not in err
    bad = write_config(FAST + "space:\n  allocator: [nosuchalloc]\n", name="bad.yaml")
    code, _, err = run_cli(capsys, "search", "--config", str(bad), "--dry-run")
    assert_one_error_line(code, err, "allocator", "nosuchalloc")


def test_size_dry_run_lists_the_ladder_and_writes_nothing(write_config, capsys, tmp_path):
    path = write_config()
    before = _listing(tmp_path)
    code, out, err = run_cli(capsys, "size", "--config", str(path), "--cpus", "1",
                             "--dry-run", "--budget", "10m")
    assert code == 0, err
    assert out.startswith("dry run: size") and "\n  size 1 " in out
    assert "caps the whole run at 10m" in out
    assert _listing(tmp_path) == before


def test_size_json_and_budget(fake_worker, write_config, capsys):
    path = write_config()
    code, out, err = run_cli(capsys, "size", "--config", str(path), "--cpus", "1",
                             "--budget", "2m", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "tuner.size" and doc["schema_version"] == 1
    written = yaml.safe_load(Path(doc["sizes_file"]).read_text())
    assert set(doc["sizes"]) == set(written) and doc["sizes"]["sizes"] == written["sizes"]
    # the budget was shared out and said, on stderr
    assert "budget: 2m" in err or "budget: 1m" in err, err
    assert "held back for validation" in err


def test_a_size_budget_too_small_is_refused_in_one_line(fake_worker, write_config, capsys):
    code, out, err = run_cli(capsys, "size", "--config", str(write_config()), "--cpus", "1",
                             "--budget", "1s")
    # after the preflight's progress lines: one error line, naming the flag and what would do
    assert code == 2 and out == "" and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "--budget" in last and "allow at least" in last
