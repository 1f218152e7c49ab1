"""The time budget (tuner/config/budget.py): durations, the split between search and validation, the
stall rule, and searches on the fake worker that stop on time or early and say why."""

from __future__ import annotations

import pytest
import yaml
from helpers import FAST, assert_one_error_line, edit, run_cli, run_search, trials

from tuner.config import budget
from tuner.errors import ConfigError
from tuner.results import compare
from tuner.results import model as results


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("1.5h", 5400), ("600", 600),
    (" 2M ", 120), (45, 45), (2.5, 2.5), ("1m30s", 90)])
def test_durations(text, seconds):
    assert budget.parse(text, "search.budget") == seconds


@pytest.mark.parametrize("bad", ["10x", "", "m", "-5m", "0", 0, -1, True, "10 m", "1e999",
                                 float("nan"), [10], "h10"])
def test_a_bad_duration_names_the_field_and_the_forms(bad):
    with pytest.raises(ConfigError) as caught:
        budget.parse(bad, "search.budget")
    message = str(caught.value)
    assert message.startswith("search.budget: expected seconds (e.g. 600) or a duration such "
                              "as 90s, 10m, 1h")
    assert repr(bad) in message


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_split_holds_back_validations_first_look_at_the_measured_cost():
    clock = Clock()
    b = budget.Budget(seconds=300, started=0.0, processes=14, per_process=8.0, clock=clock)
    clock.now = 20.0     # the preflight
    assert b.reserve == 14 * 8.0
    assert b.search_left() == pytest.approx(300 - 20 - 112)
    assert b.trials_left() == 21
    b.walls[:] = [10.0, 12.0]          # trials turn out slower: the reserve grows with them
    assert b.reserve == pytest.approx(14 * 11.0)
    assert b.trials_left() == int((300 - 20 - 154) // 11)
    assert "154" not in b.plan_line() and "held back for validation (14 processes" in b.plan_line()


def test_validation_processes_and_rounds_the_time_pays_for():
    assert budget.validation_processes(2, 2, 5) == 14
    assert budget.validation_processes(1, 2, 5) == 10   # one candidate is not screened
    clock = Clock()
    b = budget.Budget(seconds=100, started=0.0, processes=10, per_process=5.0, clock=clock)
    clock.now = 40.0
    assert b.validation_rounds(5, 20) == 6    # 60 s at 2 x 5 s per round
    assert b.validation_rounds(5, 5) == 5
    clock.now = 95.0
    assert b.validation_rounds(5, 20) == 5    # never below the first look


def test_a_budget_too_small_for_a_search_names_the_least_that_is():
    clock = Clock()
    b = budget.Budget(seconds=60, started=0.0, processes=10, per_process=5.0, clock=clock)
    clock.now = 10.0
    with pytest.raises(ConfigError) as caught:
        b.check("search.budget (--budget)")
    assert str(caught.value) == (
        "search.budget (--budget): 1m00s leaves no time for a search: the preflight took 10s "
        "and validation needs ~50s (10 processes of ~5 s); allow at least 1m20s")
    budget.Budget(seconds=120, started=0.0, processes=10, per_process=5.0,
                  clock=clock).check("x")


def test_the_record_says_what_was_spent_where():
    clock = Clock()
    b = budget.Budget(seconds=300, started=0.0, processes=10, per_process=5.0, clock=clock)
    clock.now = 10.0
    b.start_search()
    clock.now = 150.0
    b.end_search("no gain")
    b.end_search("later reasons do not replace the first")
    b.start_validation()
    clock.now = 210.0
    b.end_validation()
    assert b.record() == {"budget_s": 300.0, "spent_search_s": 140.0,
                          "spent_validation_s": 60.0, "spent_total_s": 210.0,
                          "reserved_validation_s": 50.0, "stopped": "no gain"}
    assert b.summary_line() == ("budget 5m00s: spent 3m30s, search 2m20s, validation 1m00s; "
                                "search stopped: no gain")


@pytest.mark.parametrize("values, stalled", [
    ([100, 101, 102, 103], True),           # within 5% of the best before: no gain
    ([100, 101, 106, 103], False),          # 106 beat 100 by more than 5%
    ([100, None, None, None], True),        # failed or pruned trials gain nothing
    ([100, 101, 102], False),               # not yet `patience` trials after a first one
    ([None, None, None, None], True),
    ([100, 104, 108, 112], False),          # small gains that add up beyond the noise
    ([None, 100, 101, 102], False),         # nothing measured before the last three
])
def test_the_stall_rule(values, stalled):
    assert budget.stalled(values, 0.05, 3) is stalled


# -- searches on the fake worker -----------------------------------------------------------------

@pytest.fixture
def measured_clock(tmp_path, monkeypatch):
    """The budget's clock counts measurements: every fake measurement (preflight, trial,
    validation process; the instances of one trial run together and count once) costs
    ``SECONDS``, whatever the machine's load, so the split is deterministic."""
    log = tmp_path / "children.log"
    log.touch()
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setattr(budget, "clock", lambda: SECONDS * len(
        {line.split()[2] for line in log.read_text().splitlines()}))
    return log


SECONDS = 10.0


def budget_of(outcome):
    doc = yaml.safe_load(open(outcome.tuned_path))
    return doc["search"]["budget"]


def test_a_flat_search_stops_early_and_says_why(fake_worker, write_config, monkeypatch,
                                                measured_clock):
    """Nothing beats the defaults: the patience rule ends the search long before n_trials,
    validation runs, and the file, show and the summary say how the budget went."""
    monkeypatch.setenv("FAKE_SHAPE", "flat")
    path = edit(write_config(), ("n_trials: 8", "n_trials: 60\n  sampler: random\n  budget: 5m"))
    outcome = run_search(path)
    done = trials()
    assert len(done) < 60
    # the references, then PATIENCE trials without gain
    assert len(done) == 2 + budget.PATIENCE
    spent = budget_of(outcome)
    assert spent["budget_s"] == 300
    assert spent["stopped"].startswith(f"no gain beyond noise (±5.0%) in the last "
                                       f"{budget.PATIENCE} trials")
    assert spent["spent_validation_s"] > 0 and spent["spent_search_s"] > 0
    assert spent["spent_search_s"] == 10 * len(done)
    assert spent["spent_total_s"] == 10 + spent["spent_search_s"] + spent["spent_validation_s"]
    assert any(line.startswith("budget 5m00s: preflight took") for line in outcome.lines)
    assert any("budget: stopping the search: no gain beyond noise" in line
               for line in outcome.lines)
    shown = compare.format_show(results.from_tuned_file(outcome.tuned_path), "text")
    assert "search stopped: no gain beyond noise" in shown
    assert outcome.budget.startswith("budget 5m00s: spent ")


def test_the_search_stops_when_the_next_trial_would_eat_validations_share(
        fake_worker, write_config, monkeypatch, measured_clock):
    """Every child costs 10 s: a 180 s budget after a 10 s preflight holds back 8 x 10 s for
    validation's first look (1 candidate, 4 rounds), which leaves 9 trials; the run ends
    within its budget and validation ran."""
    monkeypatch.setattr(budget, "PATIENCE", 1000)   # only the clock stops it here
    path = edit(write_config(), ("n_trials: 8", "n_trials: 200\n  sampler: random\n"
                                                "  budget: 3m"),
                ("candidates: 2", "candidates: 1"))
    outcome = run_search(path)
    spent = budget_of(outcome)
    assert "budget 3m00s: preflight took 10s, ~1m20s held back for validation (8 processes of " \
        "~10 s), the search gets ~1m30s (~9 trials)" in outcome.lines
    assert spent["stopped"] == ("no time for another trial (~10.0 s each) before "
                                "validation's ~1m20s")
    assert len(trials()) == 9
    assert spent["spent_search_s"] == 90
    assert spent["spent_validation_s"] <= 80
    assert spent["spent_total_s"] <= 180
    doc = yaml.safe_load(open(outcome.tuned_path))
    assert doc["verdict"] != "unvalidated"


def test_a_structured_search_short_of_time_keeps_its_ablation(fake_worker, write_config,
                                                               monkeypatch, measured_clock):
    """Two instances win: when the time runs out, the leader's ablation was measured before
    validation (the plan's end is moved, not the search cut)."""
    monkeypatch.setenv("FAKE_SHAPE", "layout")
    monkeypatch.setenv("FAKE_INSTANCE_GAIN", "1.8")
    path = edit(write_config(), ("n_trials: 8", "n_trials: 200\n  sampler: structured\n"
                                                "  budget: 4m"),
                ("candidates: 2", "candidates: 1"))
    outcome = run_search(path)
    spent = budget_of(outcome)
    phases = [t.user_attrs.get("phase") for t in trials()]
    assert len(phases) == 15, phases   # (240 - 10 - 80) / 10
    assert "threads" in phases        # the plan was cut short of its end ...
    assert phases[-1] == "ablation"   # ... and its ablation moved into the time left
    assert spent["stopped"].startswith("no time for another trial")
    assert any(line.startswith("  budget: time for ~") for line in outcome.lines)
    assert spent["spent_total_s"] <= 240


def test_a_bad_budget_is_one_error_line(fake_worker, write_config, capsys):
    path = edit(write_config(), ("n_trials: 8", "n_trials: 8\n  budget: 10 minutes"))
    code, _, err = run_cli(capsys, "search", "--config", str(path))
    assert_one_error_line(code, err, "search.budget", "'10 minutes'", "90s, 10m, 1h")
    code, _, err = run_cli(capsys, "search", "--config", str(write_config(FAST, "b.yaml")),
                           "--budget", "ten")
    assert_one_error_line(code, err, "--budget", "'ten'", "90s, 10m, 1h")


def test_a_budget_too_small_is_refused_after_the_preflight(fake_worker, write_config, capsys):
    path = edit(write_config(), ("n_trials: 8", "n_trials: 8\n  budget: 1s"))
    code, _, err = run_cli(capsys, "search", "--config", str(path))
    assert_one_error_line(code, err, "search.budget (--budget): 1s leaves no time for a "
                                     "search", "allow at least")


def test_the_reader_refuses_a_damaged_budget_block(small_study):
    doc = yaml.safe_load(open(small_study.tuned_path))
    doc["search"]["budget"] = {"budget_s": 300, "stopped": "line\nbreak"}
    with pytest.raises(ConfigError) as caught:
        results.from_result_doc(doc, label="x", source={}, where="x.yaml")
    assert str(caught.value).startswith("x.yaml: search.budget.stopped: expected one line")
    doc["search"]["budget"] = {"budget_s": -1}
    with pytest.raises(ConfigError, match="search.budget.budget_s: expected a positive"):
        results.from_result_doc(doc, label="x", source={}, where="x.yaml")


def test_without_a_budget_nothing_changes(small_study):
    doc = yaml.safe_load(open(small_study.tuned_path))
    assert "budget" not in doc["search"]
    assert results.from_tuned_file(small_study.tuned_path).budget is None
