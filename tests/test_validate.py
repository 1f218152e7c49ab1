"""The final interleaved rounds, with the fake worker: the futility stop, and a validation stored
in the study reused by a later worker."""

from __future__ import annotations

import json
import re

import pytest
from helpers import edit, load_study, run_search


def test_validation_stops_early_when_the_candidate_cannot_reach_the_minimum(
        fake_worker, write_config, monkeypatch):
    # every setting is equally fast: whichever candidate wins screening, three final rounds show
    # its whole interval below 1.05x, and the remaining rounds are skipped
    monkeypatch.setenv("FAKE_SHAPE", "flat")
    monkeypatch.setenv("FAKE_NOISE", "0.01")
    doc = run_search(edit(write_config(), ("rounds: 4", "rounds: 5"))).tuned
    assert doc["verdict"] == "defaults"
    validation = doc["validation"]
    assert validation["max_rounds"] == 5
    assert validation["rounds"] == 3
    assert "entirely below the minimum worth adopting" in validation["stopped_early"]
    assert len(validation["winner"]["throughput"]["per_process"]) == 3


def test_a_worker_finding_the_cap_reached_writes_the_tuned_file_from_the_stored_validation(
        fake_worker, write_config, tmp_path):
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 4\n  max_trials: 4"))
    first = run_search(path)
    late = run_search(path, output=str(tmp_path / "late.yaml"))
    assert len(load_study().trials) == 4
    assert any("no trials to add" in line for line in late.lines)
    assert any("validation: reusing the validation stored by" in line for line in late.lines)
    assert not any("final round" in line for line in late.lines)
    assert late.tuned["validation"] == first.tuned["validation"]
    assert late.tuned["result"] == first.tuned["result"]


# -- a winner that fails during validation is never adopted (#24) -------------------------------


def _fail_winner_from_round(monkeypatch, tmp_path, round_no: int) -> list[str]:
    """The winner crashes in every final round from ``round_no`` on: the fake worker misbehaves
    once the gate file exists, as it says; the search's progress line of the round before
    creates it, naming the winner's settings."""
    gate = tmp_path / "fail-now"
    monkeypatch.setenv("FAKE_BEHAVIOUR", "crash-all")   # replaced by what the gate file says
    monkeypatch.setenv("FAKE_BEHAVIOUR_FROM", str(gate))
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        found = re.match(r"validation: trial #(\d+) ", line)
        if found:   # the winner, whichever it is: its settings name it to the fake worker
            settings = load_study().trials[int(found.group(1))].user_attrs["settings"]
            winner.append(json.dumps(settings))
        if f"final round {round_no - 1}/" in line:
            gate.write_text(f"crash-settings-{winner[-1]}")

    winner: list[str] = []

    return lines, say


def _search_with(path, say):
    from tuner import config
    from tuner.search import pipeline as search

    return search.run(config.load(path), say)


def test_a_winner_failing_in_a_late_final_round_is_not_adopted(fake_worker, write_config,
                                                               monkeypatch, tmp_path):
    # five final rounds, one look: before #24 the three rounds it survived were tested at the
    # look's level (3 runs against 5 reach p = 1/56 < 0.05) and the crashing setting adopted
    lines, say = _fail_winner_from_round(monkeypatch, tmp_path, 4)
    path = edit(write_config(), ("rounds: 4", "rounds: 5\n  max_rounds: 5\n  candidates: 1"),
                ("  candidates: 2\n", ""))
    doc = _search_with(path, say).tuned
    assert any("final round 4/5" in line and "FAIL" in line for line in lines), lines
    assert doc["verdict"] == "defaults"
    assert doc["settings"]["intra_op_parallelism_threads"] == 0
    result = doc["result"]
    assert result["rejected"]["rejected_because"].startswith("failed during validation: ")
    assert result["rejected"]["failed"] and result["note"].startswith("failed during validation")
    assert "failed during validation" in doc["summary"]
    # what its three rounds measured, recorded as measured, and no test
    winner = doc["validation"]["winner"]
    assert winner["failed_after_rounds"] == 3 and len(winner["throughput"]["per_process"]) == 3
    runs = winner["throughput"]["per_process"]
    base = doc["result"]["baseline_throughput"]["per_process"]
    assert result["speedup"] == pytest.approx(
        sorted(runs)[1] / sorted(base)[len(base) // 2], rel=1e-4)
    assert result["speedup"] > 1.1 and result["speedup_ci95"][0] > 1.0
    assert result["p_value"] is None and result["rejected"]["p_value"] is None
    assert doc["validation"]["sequential"]["looks"] == []   # no look taken, no level spent


def test_a_winner_failing_after_an_inconclusive_look_is_not_tested_again(
        fake_worker, write_config, monkeypatch, tmp_path):
    # noise large enough that the first look (4 rounds) is inconclusive: the rounds are
    # extended, and the winner crashes in the first extra round
    monkeypatch.setenv("FAKE_NOISE", "0.3")
    monkeypatch.setenv("FAKE_SEED_FILE", str(tmp_path / "seed"))
    lines, say = _fail_winner_from_round(monkeypatch, tmp_path, 5)
    path = edit(write_config(), ("rounds: 4", "rounds: 4\n  max_rounds: 12\n  candidates: 1"),
                ("  candidates: 2\n", ""))
    doc = _search_with(path, say).tuned
    looks = doc["validation"]["sequential"]["looks"]
    assert [look["rounds"] for look in looks] == [4] and not looks[0]["significant"], looks
    assert any("inconclusive at look 1" in line for line in lines), lines
    assert doc["verdict"] == "defaults"
    assert doc["result"]["rejected"]["rejected_because"].startswith("failed during validation")
    assert doc["result"]["p_value"] is None


def test_a_defaults_verdict_records_the_measured_numbers_not_made_up_ones(
        fake_worker, write_config, monkeypatch):
    monkeypatch.setenv("FAKE_SHAPE", "flat")
    doc = run_search(edit(write_config(), ("rounds: 4", "rounds: 5"))).tuned
    assert doc["verdict"] == "defaults"
    result, rejected = doc["result"], doc["result"]["rejected"]
    for key in ("speedup", "speedup_ci95", "p_value"):
        assert result[key] == rejected[key] is not None
    assert result["speedup_ci95"] != [1.0, 1.0] and result["speedup"] != 1.0
    assert 0 < result["p_value"] < 1
    assert result["speedup_ci95"][0] < result["speedup"] < result["speedup_ci95"][1]
