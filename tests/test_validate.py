"""The final interleaved rounds, with the fake worker: the futility stop, and a validation stored
in the study reused by a later worker."""

from __future__ import annotations

from helpers import (
    edit,
    load_study,
    run_search,
)


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
