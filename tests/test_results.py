"""The results model: a tuned file or a study read as one ``Result`` (through ``show``)."""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml
from helpers import FIXTURES, run_cli


def test_a_damaged_tuned_file_names_the_field(tmp_path, capsys):
    text = (FIXTURES / "branchy.yaml").read_text().replace("    - 3514.39\n", "    - fast\n")
    (tmp_path / "bad.yaml").write_text(text)
    code, _, err = run_cli(capsys, "show", str(tmp_path / "bad.yaml"))
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'bad.yaml'}: result.throughput.per_process: "
                          f"expected a list of 1 to 64 positive numbers")


def test_show_and_compare_read_a_study(small_study, capsys):
    code, out, err = run_cli(capsys, "show", "--storage", "sqlite:///results/study.db",
                             "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["source"] == {"kind": "study", "name": "study",
                             "storage": "sqlite:///results/study.db"}
    assert doc["verdict"] == small_study.tuned["verdict"]
    # the study records the validated settings and numbers: the same as the tuned file
    tuned_doc = small_study.tuned
    assert doc["throughput"]["per_process"] == pytest.approx(
        tuned_doc["result"]["throughput"]["per_process"], rel=1e-5)
    assert doc["settings"]["intra_op_parallelism_threads"] == \
        tuned_doc["settings"]["intra_op_parallelism_threads"]
    code, out, err = run_cli(capsys, "compare", small_study.tuned_path, "--storage",
                             "sqlite:///results/study.db", "--study-name", "study",
                             "--format", "json")
    assert code == 0, err
    pair = json.loads(out)["comparisons"][0]
    assert pair["same_machine"] and pair["throughput"]["ratio"] == pytest.approx(1.0, rel=1e-5)
    assert pair["throughput"]["verdict"] == "within noise"


def test_tuner_storage_is_read_by_show_report_and_compare(small_study, capsys, monkeypatch):
    # the password stays off the command line: every command that reads a storage takes it
    monkeypatch.setenv("TUNER_STORAGE", "sqlite:///results/study.db")
    code, out, err = run_cli(capsys, "show", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["source"]["storage"] == "sqlite:///results/study.db"
    code, out, err = run_cli(capsys, "report", "--study-name", "study")
    assert code == 0, err
    assert "study" in out and "trial" in out
    code, out, err = run_cli(capsys, "compare", small_study.tuned_path, "--study-name", "study",
                             "--format", "json")
    assert code == 0, err
    assert json.loads(out)["comparisons"][0]["throughput"]["verdict"] == "within noise"
    # the flag wins over the variable
    monkeypatch.setenv("TUNER_STORAGE", "sqlite:///results/elsewhere.db")
    code, out, err = run_cli(capsys, "show", "--storage", "sqlite:///results/study.db",
                             "--format", "json")
    assert code == 0, err
    code, _, err = run_cli(capsys, "show")
    assert code != 0 and "elsewhere.db" in err


def test_every_storage_help_states_one_precedence(capsys):
    from tuner import cli
    for command in ("search", "size", "show", "compare", "report"):
        parser = cli.build_parser()._subparsers._group_actions[0].choices[command]
        help_text = " ".join(parser.format_help().split())
        assert "$TUNER_STORAGE" in help_text, command
        assert " ".join(cli.STORAGE_PRECEDENCE.split()) in help_text, command


def _expert_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("expert rule"))


def _branchy(tmp_path, expert_rule: dict) -> str:
    doc = yaml.safe_load((FIXTURES / "branchy.yaml").read_text())
    doc["search"]["expert_rule"].update(expert_rule)
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_the_expert_rule_without_a_baseline_trial_is_measured_not_compared(tmp_path, capsys):
    # the expert rule's trial completed and the baseline's did not: no speedup, but a measurement
    path = _branchy(tmp_path, {"speedup_in_search": None})
    code, out, err = run_cli(capsys, "show", path)
    assert (code, err) == (0, "")
    assert _expert_line(out).split(None, 2)[2] == (
        "intra=2 inter=2: 2513.3 samples/s in its search trial (one process); no baseline "
        "trial completed to compare it with")
    code, out, err = run_cli(capsys, "show", path, "--format", "json")
    assert json.loads(out)["expert"]["throughput_in_search"] == pytest.approx(2513.33)


def test_an_expert_rule_whose_trial_did_not_complete_is_not_measured(tmp_path, capsys):
    path = _branchy(tmp_path, {"speedup_in_search": None, "throughput": None})
    code, out, err = run_cli(capsys, "show", path)
    assert (code, err) == (0, "")
    assert _expert_line(out).split(None, 2)[2] == (
        "intra=2 inter=2: not measured (its search trial did not complete)")


def test_a_damaged_expert_throughput_names_the_field(tmp_path, capsys):
    path = _branchy(tmp_path, {"throughput": {"median": "fast"}})
    code, _, err = run_cli(capsys, "show", path)
    assert code == 2
    assert err.startswith(f"error: {path}: search.expert_rule.throughput.median: ")


def test_a_study_without_a_baseline_trial_shows_the_expert_rule_as_measured(small_study,
                                                                            capsys):
    # the study as a search leaves it when the baseline trial failed and nothing was validated
    db = sqlite3.connect("results/study.db")
    with db:
        assert db.execute("UPDATE trial_user_attributes SET value_json = '\"other\"' WHERE "
                          "key = 'role' AND value_json = '\"baseline\"'").rowcount == 1
        assert db.execute("DELETE FROM study_user_attributes WHERE key = "
                          "'tuner.last_result'").rowcount == 1
        expert_median = json.loads(db.execute(
            "SELECT t.value_json FROM trial_user_attributes t JOIN trial_user_attributes r "
            "ON t.trial_id = r.trial_id WHERE r.key = 'role' AND r.value_json = '\"expert\"' "
            "AND t.key = 'throughput'").fetchone()[0])["median"]
    db.close()
    code, out, err = run_cli(capsys, "show", "--storage", "sqlite:///results/study.db")
    assert (code, err) == (0, "")
    assert "unvalidated" in out
    assert _expert_line(out).endswith(
        f": {expert_median:.1f} samples/s in its search trial (one process); no baseline trial "
        f"completed to compare it with")
