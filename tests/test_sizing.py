"""``python -m tuner size``: the ladder, the per-size search and validation, the recommendation,
the sizes file and what reads it (show, report, export/run/apply ``--size K``).

The fake worker's ``FAKE_SCALING`` gives throughput a known curve over the CPUs a child is
pinned to, so the right size, replica count and cost are known in advance.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import (
    DUMMY_WORKLOAD,
    TEST_ENV,
    assert_one_error_line,
    fake_machine,
    run_cli,
    sixteen_cpus,
    write_text,
)

from tuner import config
from tuner.base import cpusets, host
from tuner.production import apply as production
from tuner.search import sizing
from tuner.tuned import sizes

# Seconds with the fake worker: 2 trials per size (the references), 2 short windows, a
# validation of 4 rounds with one candidate.
SIZED = """\
workload:
  model: wl.py:build_model
  data: wl.py:build_data
  mode: predict
search:
  n_trials: 2
  trial_timeout: 20
measure:
  warmup_seconds: 0
  window_seconds: 0.01
  windows: 2
validate:
  candidates: 1
  screen_rounds: 1
  rounds: 4
  max_rounds: 4
space:
  instances: default
"""


def _size(path: Path, machine: host.Machine | None = None, **options) -> sizing.SizingOutcome:
    lines: list[str] = []
    outcome = sizing.run(config.load(path), sizing.Options(**options), lines.append, machine)
    outcome.lines = lines  # type: ignore[attr-defined]
    return outcome


def _sized_config(directory: Path) -> str:
    """SIZED, with the dummy workload module beside it."""
    (directory / "wl.py").write_text(DUMMY_WORKLOAD)
    return SIZED


def _machine(root: Path, cpus: int) -> host.Machine:
    fake_machine(root, cpus=cpus)
    return host.detect(root, affinity=list(range(cpus)))


# -- the ladder and the machine of one size ---------------------------------------------------

def test_the_default_ladder_doubles_and_always_ends_at_the_usable_cpus():
    assert sizing.ladder(1) == [1]
    assert sizing.ladder(2) == [1, 2]
    assert sizing.ladder(6) == [1, 2, 4, 6]
    assert sizing.ladder(16) == [1, 2, 4, 8, 16]
    assert sizing.ladder(8, [4, 1, 2]) == [1, 2, 4]


def test_a_size_beyond_the_usable_cpus_is_refused():
    with pytest.raises(config.ConfigError, match=r"--cpus: 4 is more than the 2 CPU\(s\)"):
        sizing.ladder(2, [1, 4])


def test_a_size_sees_only_its_own_cpus(tmp_path):
    m = sixteen_cpus(tmp_path)   # 2 nodes x 4 cores x 2 hyperthreads
    four = sizing.sized_machine(m, 4)
    assert four.affinity == tuple(cpusets.cpu_set(m, 4))
    assert four.usable_cpus == 4 and four.physical_cores == 4 and four.numa_nodes == 1
    assert cpusets.cpu_set(four, 4) == cpusets.cpu_set(m, 4)
    twelve = sizing.sized_machine(m, 12)
    assert twelve.numa_nodes == 2 and twelve.usable_cpus == 12
    # the space of a size is built for its CPUs: no thread count beyond what its ladder allows
    cfg = config.load(write_text(tmp_path / "s.yaml", _sized_config(tmp_path)))
    space = sizing.size_space(four, cfg, sizing.space_mod.Pipeline())
    assert max(v for v in space.searched["intra_op_parallelism_threads"] if v) <= 8
    assert space.fixed["cpus"] == 4
    assert space.baseline()["cpus"] == 4 and space.expert(four)["cpus"] == 4
    assert space.expert(four)["intra_op_parallelism_threads"] == 4


def test_the_previous_winner_is_rescaled_and_snapped_to_the_new_space(tmp_path):
    m = _machine(tmp_path, 8)
    cfg = config.load(write_text(tmp_path / "s.yaml", _sized_config(tmp_path).replace(
        "  instances: default\n", "")))
    four = sizing.size_space(sizing.sized_machine(m, 4), cfg, sizing.space_mod.Pipeline())
    won = {**four.baseline(), "intra_op_parallelism_threads": 2, "inter_op_parallelism_threads": 1,
           "instances": 2, "cpus": 2}
    point = sizing.rescale(won, four, 2, 4)
    assert point["instances"] == 4                        # CPUs per instance kept (1) ...
    assert point["intra_op_parallelism_threads"] == 2     # ... so threads per instance too
    one = {**won, "instances": None}                      # one process: its threads scale
    assert sizing.rescale(one, four, 2, 4)["intra_op_parallelism_threads"] == 4
    assert point["inter_op_parallelism_threads"] == 1     # not a per-CPU count
    assert point["cpus"] == 4
    # TensorFlow's own choice stays its own choice
    assert sizing.rescale(four.baseline(), four, 2, 4) == four.baseline()


# -- the recommendation ------------------------------------------------------------------------

def _rows(curve: dict[int, float], p95: dict[int, float] | None = None) -> list[dict]:
    return [{"cpus": n, "verdict": "defaults", "throughput": {"median": tp, "ci95": [tp, tp]},
             "latency_ms": {"p50": 10.0, "p95": (p95 or {}).get(n, 12.0)}}
            for n, tp in curve.items()]


LINEAR = {1: 1000.0, 2: 2000.0, 4: 4000.0, 8: 8000.0}
SATURATING = {1: 1000.0, 2: 2000.0, 4: 2000.0, 8: 2000.0}
DECLINING = {1: 1000.0, 2: 1600.0, 4: 1400.0, 8: 1100.0}


def test_recommendation_on_a_linear_curve():
    rec = sizing.recommend(_rows(LINEAR), target=5000, price=0.05)
    # every size reaches 5000 with 5 CPUs' worth or more: 5 x 1 CPU uses the fewest
    assert rec["choice"]["cpus"] == 1 and rec["choice"]["replicas"] == 5
    assert rec["choice"]["total_cpus"] == 5
    assert [(o["cpus"], o["replicas"], o["total_cpus"]) for o in rec["options"]] == [
        (1, 5, 5), (2, 3, 6), (4, 2, 8), (8, 1, 8)]
    assert rec["fastest"]["cpus"] == 8
    assert rec["most_efficient"]["cpus"] == 1   # a tie per CPU goes to the smaller size
    assert rec["choice"]["cost_per_hour"] == pytest.approx(5 * 0.05)
    assert rec["choice"]["cost_per_million"] == pytest.approx(5 * 0.05 * 1e6 / (3600 * 5000))


def test_recommendation_on_a_saturating_curve():
    rec = sizing.recommend(_rows(SATURATING), target=4000)
    # 4 x 1 and 2 x 2 both take 4 CPUs for 4000 samples/s: fewer replicas wins the tie
    assert (rec["choice"]["cpus"], rec["choice"]["replicas"]) == (2, 2)
    assert {o["cpus"]: o["replicas"] for o in rec["options"]} == {1: 4, 2: 2, 4: 2, 8: 2}
    assert rec["fastest"]["cpus"] == 2      # the same throughput from more CPUs is not faster


def test_recommendation_on_a_declining_curve_never_picks_the_biggest_size():
    rec = sizing.recommend(_rows(DECLINING), target=3000, price=0.10)
    assert (rec["choice"]["cpus"], rec["choice"]["replicas"], rec["choice"]["total_cpus"]) == \
        (1, 3, 3)
    assert rec["fastest"]["cpus"] == 2
    assert rec["most_efficient"]["cpus"] == 1
    assert rec["cheapest"]["cpus"] == 1
    assert rec["cheapest"]["cost_per_million"] == pytest.approx(0.10 * 1e6 / (3600 * 1000))


def test_a_latency_budget_excludes_sizes_and_says_why():
    rec = sizing.recommend(_rows(LINEAR, p95={1: 40.0, 2: 25.0}), target=5000, budget=30.0)
    assert [e["cpus"] for e in rec["excluded"]] == [1]
    assert "40.00 ms is over the 30 ms budget" in rec["excluded"][0]["reason"]
    assert rec["choice"]["cpus"] == 2 and rec["choice"]["replicas"] == 3
    assert "excluded: 1 CPU(s)" in rec["summary"]


def test_without_a_target_the_most_efficient_and_fastest_are_named():
    rec = sizing.recommend(_rows(DECLINING))
    assert rec["choice"] is None and rec["options"] == []
    assert "most efficient: 1 CPU(s)" in rec["summary"]
    assert "fastest single process: 2 CPU(s) (1600.0 samples/s)" in rec["summary"]


# -- the ladder on the fake worker -------------------------------------------------------------

@pytest.mark.parametrize("shape, budget, expected, excluded", [
    # 1000 samples/s per CPU at every size: 4500 takes 5 x 1 CPU
    ("linear", None, (1, 5), []),
    # 1000, 2000, 2000: one CPU is over a 20 ms p95 budget (the fake's step takes 32 ms
    # there), so 3 x 2 CPUs; 4 CPUs would need 12
    ("saturating", 20.0, (2, 3), [1]),
    # 1000, 1600, 1400: 3 x 2 CPUs (6 CPUs) beats 4 x 4 CPUs
    ("declining", 25.0, (2, 3), [1]),
])
def test_a_fake_ladder_measures_the_curve_and_recommends(fake_worker, tmp_path, monkeypatch,
                                                         shape, budget, expected, excluded):
    monkeypatch.setenv("FAKE_SHAPE", "flat")        # settings do not matter: the curve does
    monkeypatch.setenv("FAKE_SCALING", shape)
    monkeypatch.setenv("FAKE_NO_PIN", "1")          # a simulated 4-CPU machine
    monkeypatch.setenv("FAKE_NOISE", "0.002")
    path = write_text(tmp_path / "s.yaml", _sized_config(tmp_path))
    outcome = _size(path, _machine(tmp_path / "m", 4), target=4500, price=0.05, budget=budget)
    rows = {r["cpus"]: r for r in outcome.doc["sizes"]}
    assert sorted(rows) == [1, 2, 4]
    curve = {"linear": LINEAR, "saturating": SATURATING, "declining": DECLINING}[shape]
    for n, row in rows.items():
        assert row["throughput"]["median"] == pytest.approx(curve[n], rel=0.02)
        assert row["per_cpu"] == pytest.approx(curve[n] / n, rel=0.02)
        assert row["settings"]["cpus"] == cpusets.cpu_set(sizing.sized_machine(
            host.detect(tmp_path / "m", affinity=list(range(4))), n), n)
        assert row["cost_per_million"] == pytest.approx(n * 0.05 * 1e6 / (3600 * curve[n]),
                                                        rel=0.02)
        assert row["latency_ms"]["p95"] > 0 and row["peak_rss_mb"] == 100.0
    rec = outcome.doc["recommendation"]
    assert (rec["choice"]["cpus"], rec["choice"]["replicas"]) == expected
    assert [e["cpus"] for e in rec["excluded"]] == excluded
    # the file on disk says the same, and passes the strict reader
    read = sizes.read(outcome.path)
    assert read.recommendation["choice"]["cpus"] == rec["choice"]["cpus"]
    assert read.recommendation["choice"]["replicas"] == rec["choice"]["replicas"]


def test_each_size_starts_from_the_previous_winner_and_validates_against_pinned_defaults(
        fake_worker, write_config, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SCALING", "linear")   # the default "peak" shape: intra=2, inter=1
    # TPE, seeded: its first trials are then the same draws in every run, and on 1 CPU they
    # include a winner to carry (intra=2); unseeded, about one run in four found none
    path = write_text(tmp_path / "s.yaml", _sized_config(tmp_path).replace(
        "n_trials: 2", "n_trials: 5\n  seed: 2\n  sampler: tpe").replace(
        "candidates: 1", "candidates: 2"))
    outcome = _size(path, cpus=[1, 2])
    rows = {r["cpus"]: r for r in outcome.doc["sizes"]}
    # the second size carried the first one's winner, rescaled to its CPUs
    assert rows[2].get("carried_from") == 1, "\n".join(outcome.lines)
    assert any("carried from size 1" in line for line in outcome.lines)
    from helpers import load_study

    storage = "sqlite:///results/s.db"
    trials = load_study("s.size-2", storage).trials
    carried = [t for t in trials if t.user_attrs.get("carried_from") == 1]
    assert len(carried) == 1 and carried[0].number == 2   # right after the references
    # the baseline of each size is TensorFlow's defaults pinned to that size's CPUs
    for n in (1, 2):
        base = [t for t in load_study(f"s.size-{n}", storage).trials
                if t.user_attrs.get("role") == "baseline"][0]
        assert base.user_attrs["settings"]["cpus"] == n
        assert base.user_attrs["affinity"] == list(range(n))
    assert rows[2]["verdict"] == "tuned"
    assert rows[2]["settings"]["intra_op_parallelism_threads"] == 2
    assert rows[2]["vs_defaults"]["speedup"] > 1.05


def test_a_size_whose_trials_all_fail_is_a_failed_row_and_excluded(fake_worker, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "crash-measure")
    path = write_text(tmp_path / "s.yaml", _sized_config(tmp_path))
    with pytest.raises(sizing.StudyError, match="every size failed"):
        _size(path, cpus=[1])
    assert not (tmp_path / "results" / "s" / "sizes.yaml").exists()


# -- the sizes file and what reads it -----------------------------------------------------------

@pytest.fixture(scope="module")
def sized(tmp_path_factory, fake_search_in):
    """One fake size run on this machine's 1 and 2 CPUs (a saturating curve), once per module."""
    directory = tmp_path_factory.mktemp("sized")
    path = write_text(directory / "s.yaml", SIZED)
    with fake_search_in(directory) as mp:
        mp.setenv("FAKE_SHAPE", "flat")
        mp.setenv("FAKE_SCALING", "saturating")
        # 2900, not 3000: three 1-CPU replicas reach it even when the noise puts one below 1000
        outcome = _size(path, cpus=[1, 2], target=2900, price=0.05)
    return Path(directory / outcome.path)


def test_show_prints_the_sizes_table_and_recommendation(sized, capsys):
    code, out, err = run_cli(capsys, "show", str(sized))
    assert code == 0, err
    assert "cpus" in out and "samples/s" in out and "cost per M samples" in out
    assert "recommendation: 2900 samples/s: 3 x 1 CPU(s) = 3 CPUs in total" in out
    code, out, _ = run_cli(capsys, "show", str(sized), "--format", "markdown")
    assert code == 0 and "| cpus |" in out
    code, out, _ = run_cli(capsys, "show", str(sized), "--format", "json")
    assert code == 0 and '"kind": "sizes"' in out


def test_report_of_a_sizes_file_writes_an_offline_page(sized, capsys, tmp_path):
    page = tmp_path / "sizes.html"
    code, out, err = run_cli(capsys, "report", str(sized), "--html", str(page))
    assert code == 0, err
    text = page.read_text()
    assert text.count('class="plotly-graph-div"') == 2
    assert "<script src=\"http" not in text
    assert "Throughput and cost against CPUs" in text


def test_export_k8s_of_a_size_carries_resources_and_replicas(sized, capsys):
    code, out, err = run_cli(capsys, "export", str(sized), "--format", "k8s", "--size", "1")
    assert code == 0, err
    body = yaml.safe_load(out)
    assert body["resources"]["requests"]["cpu"] == "1"
    assert body["resources"]["limits"]["cpu"] == "1"
    # 1.5 x the fake's 100 MiB peak, rounded up to 64 MiB
    assert body["resources"]["limits"]["memory"] == "192Mi"
    assert ("# replicas: 3 (3 replicas of 1 CPU(s) reach the target of 2900 samples/s (the "
            "recommended size))") in out
    code, out, err = run_cli(capsys, "export", str(sized), "--format", "k8s", "--size", "2")
    assert yaml.safe_load(out)["resources"]["requests"]["cpu"] == "2"
    assert "# replicas: 2 (2 replicas of 2 CPU(s)" in out
    code, out, err = run_cli(capsys, "export", str(sized), "--size", "2")
    assert code == 0 and "CPU set 0-1" in out


def test_apply_reads_the_row_it_is_given(sized):
    tuned = production.read(str(sized), size=1)
    assert tuned.settings["cpus"] == [0]
    assert tuned.doc["machine"]["usable_cpus"] == 1
    # measured on one CPU of this machine: no CPU-count warning here (only the fake's TF)
    assert not [d for d in production.machine_differences(tuned.doc) if "CPUs" in d]


def test_run_with_a_size_pins_the_command_and_tells_apply_the_row(sized, tmp_path):
    probe = ("import os, sys; from tuner.production import apply as production; "
             "t = production.read(os.environ['TUNER_TUNED_FILE']); "
             "print(sorted(os.sched_getaffinity(0)), os.environ['TUNER_TUNED_SIZE'], "
             "t.settings['cpus'])")
    env = {k: v for k, v in os.environ.items() if k not in TEST_ENV}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-m", "tuner", "run", "--tuned", str(sized),
                           "--size", "1", "--quiet", "--", sys.executable, "-c", probe],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0] 1 [0]"


@pytest.mark.parametrize("argv, needles", [
    (["export", "{f}", "--size", "3"], ["--size 3: no row for 3 CPUs", "rows for 1, 2"]),
    (["export", "{f}"], ["a sizes file has one row per CPU count (1, 2)", "--size K"]),
    (["export", "{f}", "--size", "0"], ["--size", "expected a positive integer", "'0'"]),
    (["run", "--tuned", "{f}", "--size", "x", "--", "true"], ["--size", "'x'"]),
])
def test_bad_size_flags_give_one_line(sized, capsys, argv, needles):
    code, _, err = run_cli(capsys, *[a.replace("{f}", str(sized)) for a in argv])
    assert_one_error_line(code, err, *needles)


def test_a_size_of_a_tuned_file_is_refused(small_study, capsys):
    code, _, err = run_cli(capsys, "export", "results/study/tuned.yaml", "--size", "1")
    assert_one_error_line(code, err, "tuned.yaml: a tuned file, not a sizes file", "drop it")


@pytest.mark.parametrize("argv, needles", [
    (["--cpus", "0"], ["--cpus", "'0'", "CPU counts >= 1"]),
    (["--cpus", "1,x"], ["--cpus", "'1,x'"]),
    (["--cpus", "1,1"], ["--cpus", "appears twice"]),
    (["--cpus", "1,64"], ["--cpus: 64 is more than the"]),
    (["--target-throughput", "-5"], ["--target-throughput", "samples/s", "'-5'"]),
    (["--cpu-hour-price", "nan"], ["--cpu-hour-price", "'nan'"]),
    (["--latency-budget-ms", "0"], ["--latency-budget-ms", "milliseconds", "'0'"]),
    (["--n-trials", "0"], ["--n-trials", "'0'"]),
    (["--output", "out.txt"], ["--output", "'out.txt'", ".yaml"]),
])
def test_bad_size_command_flags_give_one_line(fake_worker, write_config, capsys, argv, needles):
    path = write_config(SIZED)
    code, _, err = run_cli(capsys, "size", "--config", str(path), *argv)
    assert_one_error_line(code, err, *needles)
    assert not Path("results/study/sizes.yaml").exists()


def _broken(sized: Path, tmp_path: Path, change) -> Path:
    doc = yaml.safe_load(sized.read_text())
    change(doc)
    out = tmp_path / "bad.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def _set(path: str, value):
    def change(doc):
        keys = path.split(".")
        target = doc
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        elif value is _DROP:
            target.pop(last)
        else:
            target[last] = value
    return change


_DROP = object()


@pytest.mark.parametrize("change, needles", [
    (_set("format_version", 9), ["format_version 9 is not supported"]),
    (_set("kind", "tuned"), ["not a sizes file (no 'kind: sizes')"]),
    (_set("sizes", []), ["sizes: expected a non-empty list"]),
    (_set("sizes.0.cpus", 0), ["sizes[0].cpus: expected an integer >= 1, got 0"]),
    (_set("sizes.1.cpus", 1), ["sizes[1].cpus: 1 appears twice"]),
    (_set("sizes.0.verdict", "great"), ["sizes[0] (cpus 1).verdict", "'great'"]),
    (_set("sizes.0.settings.cpus", [0, 1]),
     ["sizes[0] (cpus 1): settings.cpus: expected the 1 CPU(s) this row is pinned to"]),
    (_set("sizes.0.settings.intra_op_parallelism_threads", -1),
     ["sizes[0] (cpus 1): settings.intra_op_parallelism_threads"]),
    (_set("sizes.0.settings.env", {"LD_LIBRARY_PATH": "/evil"}),
     ["sizes[0] (cpus 1): settings.env.LD_LIBRARY_PATH: not a variable tuner sets"]),
    # reduced precision in a row measured without a tolerance (the guard's block has none, #23)
    (_set("sizes.0.settings.env", {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}),
     ["sizes[0] (cpus 1): result.accuracy: expected metric rel_l2, max_abs or top1 with a "
      "numeric tolerance > 0", "tolerance None"]),
    (_set("sizes.0.throughput.median", "fast"),
     ["sizes[0] (cpus 1).throughput.median: expected a number > 0", "'fast'"]),
    (_set("sizes.0.throughput.ci95", [1]), ["sizes[0] (cpus 1).throughput.ci95"]),
    (_set("sizes.0.peak_rss_mb", float("nan")), ["sizes[0] (cpus 1).peak_rss_mb"]),
    (_set("recommendation.choice.cpus", 8),
     ["recommendation.choice.cpus: 8 is not a row of the file"]),
    (_set("recommendation.summary", "a\nb"), ["recommendation.summary: expected a line"]),
])
def test_bad_sizes_files_give_one_line_everywhere(sized, tmp_path, capsys, change, needles):
    bad = _broken(sized, tmp_path, change)
    for argv in (["show", str(bad)], ["export", str(bad), "--size", "1"],
                 ["report", str(bad)], ["run", "--tuned", str(bad), "--size", "1", "--", "true"]):
        code, out, err = run_cli(capsys, *argv)
        if argv[0] in ("show", "report") and "kind" in needles[0]:
            continue   # not a sizes file at all: show/report take it as a tuned file / study
        assert_one_error_line(code, err, *needles)
        assert out == ""


def test_a_failed_row_cannot_be_used(sized, tmp_path, capsys):
    def fail(doc):
        doc["sizes"][0] = {"cpus": 1, "verdict": "failed", "reason": "all 2 trials failed"}
    bad = _broken(sized, tmp_path, fail)
    code, _, err = run_cli(capsys, "export", str(bad), "--size", "1")
    assert_one_error_line(code, err, "--size 1: that size failed in the size run",
                          "all 2 trials failed", "sizes with settings: 2")
    code, out, _ = run_cli(capsys, "show", str(bad))
    assert code == 0 and "failed" in out


def test_the_sizes_files_history_is_kept_to_the_newest_n(sized, tmp_path):
    target = tmp_path / "sizes.yaml"
    doc = sizes.read(sized).doc
    for _ in range(4):
        written = sizes.write(doc, target, keep_backups=2)
    history = sorted(tmp_path.glob("sizes.yaml.*.bak"))
    assert len(history) == 2 and written.backup in history


def test_the_sizes_file_is_replaced_with_history_kept(sized, tmp_path):
    target = tmp_path / "sizes.yaml"
    doc = sizes.read(sized).doc
    sizes.write(doc, target)
    written = sizes.write(doc, target)
    assert written.backup is not None and written.backup.exists()
    assert sizes.read(target).rows == sizes.read(written.backup).rows
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_costs_in_the_file_follow_the_price(sized):
    for row in sizes.read(sized).rows:
        assert row["cost_per_million"] == pytest.approx(
            row["cpus"] * 0.05 * 1e6 / (3600 * row["throughput"]["median"]), rel=1e-5)
    rec = sizes.read(sized).recommendation
    assert rec["cpu_hour_price"] == 0.05 and rec["target_throughput"] == 2900
    assert math.isclose(rec["choice"]["cost_per_hour"], rec["choice"]["total_cpus"] * 0.05)


# -- real TensorFlow -----------------------------------------------------------------------------

@pytest.mark.tf
def test_a_real_size_run_on_1_and_2_cpus_feeds_apply_run_and_export(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from helpers import copy_workloads

    copy_workloads(tmp_path, "tiny.py")
    path = write_text(tmp_path / "real.yaml", """\
        workload: {model: tiny.py:build_model, data: tiny.py:build_data, mode: predict}
        search: {n_trials: 2, trial_timeout: 90}
        measure: {warmup_seconds: 0.3, window_seconds: 0.3, windows: 2}
        validate: {candidates: 1, rounds: 4, max_rounds: 4}
        """)
    code, out, err = run_cli(capsys, "size", "--config", str(path), "--cpus", "1,2",
                             "--target-throughput", "1000", "--cpu-hour-price", "0.05")
    assert code == 0, out + err
    read = sizes.read("results/real/sizes.yaml")
    assert read.counts() == [1, 2]
    for row in read.rows:
        assert row["verdict"] in ("tuned", "defaults")
        assert len(row["settings"]["cpus"]) == row["cpus"]
        assert row["throughput"]["median"] > 0 and row["peak_rss_mb"] > 50
        assert row["latency_ms"]["p95"] >= row["latency_ms"]["p50"] > 0
    assert read.recommendation["choice"]["cpus"] in (1, 2)
    env = {k: v for k, v in os.environ.items() if k not in TEST_ENV}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    apply = ("import os, warnings, tuner; warnings.simplefilter('ignore'); "
             "cfg = tuner.apply('results/real/sizes.yaml', size=1); "
             "print(sorted(os.sched_getaffinity(0)), cfg.info()['threading'])")
    done = subprocess.run([sys.executable, "-c", apply], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{read.row(1)['settings']['cpus']} ")
    probe = "import os; print(sorted(os.sched_getaffinity(0)))"
    done = subprocess.run([sys.executable, "-m", "tuner", "run", "--tuned",
                           "results/real/sizes.yaml", "--size", "2", "--quiet", "--",
                           sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(read.row(2)["settings"]["cpus"])
    code, out, err = run_cli(capsys, "export", "results/real/sizes.yaml", "--format", "k8s",
                             "--size", "1")
    assert code == 0, err
    resources = yaml.safe_load(out)["resources"]
    assert resources["requests"]["cpu"] == "1" and resources["limits"]["cpu"] == "1"
    assert resources["limits"]["memory"].endswith("Mi")


def test_a_structured_study_takes_the_carried_winner_as_a_reference(tmp_path):
    import types

    import optuna

    from tuner.knobs import space as space_mod
    from tuner.search import structured

    m = sixteen_cpus(tmp_path)
    four = sizing.sized_machine(m, 4)
    space = space_mod.build_space(four, {"allocator": "default"})
    sampler = structured.StructuredSampler(structured.StructuredSpace(space, four), seed=0)
    st = types.SimpleNamespace(structured=sampler, space=space, machine=four,
                               optuna=optuna.create_study(direction="maximize", sampler=sampler))
    lines = []
    # size 2's winner: 2 instances of 1 CPU, one intra-op thread each
    won = {**space.baseline(), "instances": 2, "intra_op_parallelism_threads": 1}
    sizing._enqueue_carried(st, (2, won), 4, lines.append)
    trial = st.optuna.ask()
    params = {n: trial.suggest_categorical(n, list(v))
              for n, v in sampler.space.params.items()}
    assert trial.user_attrs == {sizing.CARRIED_FROM: 2, "phase": "reference"}
    carried = sampler.space.settings(params)
    assert carried["instances"] == 4                      # scaled with the CPUs
    assert carried["intra_op_parallelism_threads"] == 1   # still one thread per 1-CPU instance
    assert lines and "carried from size 2" in lines[0]
    # a resumed size does not get it twice
    sizing._enqueue_carried(st, (2, won), 4, lines.append)
    assert len(lines) == 1


def test_a_sizes_file_prints_its_text_inert_in_every_format(sized, tmp_path, capsys):
    # workload.model and interrupted are free text: markup escaped where it means something;
    # control characters there make the file damaged, refused in one inert line
    bad = _broken(sized, tmp_path, lambda doc: doc.update(
        workload={**doc["workload"], "model": "m.keras <img src=x>"},
        interrupted="stopped <img src=y>"))
    for argv, shown in ((["show", str(bad)], "m.keras <img src=x>"),
                        (["report", str(bad)], "stopped <img src=y>"),
                        (["show", str(bad), "--format", "markdown"], "m.keras \\<img src=x\\>")):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, err
        assert shown in out, out
    assert "<img src=x>" not in out.replace("\\<img src=x\\>", "")
    page = tmp_path / "s.html"
    code, _, err = run_cli(capsys, "report", str(bad), "--html", str(page))
    assert code == 0, err
    assert "<img src=x>" not in page.read_text() and "&lt;img src=x&gt;" in page.read_text()
    for field, value in (("workload", {"model": "m.keras\x1b]0;pwned\x07"}),
                         ("interrupted", "stopped\n\x1b[2Jfake line")):
        bad = _broken(sized, tmp_path, lambda doc, f=field, v=value: doc.update(
            {f: {**doc["workload"], **v} if f == "workload" else v}))
        for argv in (["show", str(bad)], ["report", str(bad)]):
            code, out, err = run_cli(capsys, *argv)
            assert code == 2 and out == "" and err.count("\n") == 1, (argv, err)
            assert "\x1b" not in err and "\\x1b" in err and "expected a line of text" in err
