"""``python -m tuner check``: a tuned file re-measured against TensorFlow's defaults here, with the
fake worker (whose throughput is a known function of the settings), and once with real
TensorFlow on the quickstart config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import (
    DUMMY_WORKLOAD,
    FAST,
    assert_one_error_line,
    run_cli,
    skip_without_tensorflow,
    write_text,
)

from tuner import config
from tuner.search import check, sizing, validate, verdict

ROOT = Path(__file__).resolve().parent.parent

# A search whose winner the fake knows: intra=2, inter=1 is 1.3x the defaults.
SPACE = """\
space:
  intra_op_parallelism_threads: [1, 2, 3]
  inter_op_parallelism_threads: [1, 2]
  tf_data: {private_threadpool_size: default, max_intra_op_parallelism: default}
  env: {TF_ENABLE_ONEDNN_OPTS: default}
  allocator: default
  instances: default
"""


@pytest.fixture
def tuned_file(fake_worker, write_config, capsys):
    """A validated fake search's tuned file (verdict tuned) and its config."""
    path = write_config(FAST.replace("n_trials: 8", "n_trials: 14") + SPACE)
    code, _, err = run_cli(capsys, "search", "--config", str(path))
    assert code == 0, err
    tuned = Path("results/study/tuned.yaml")
    assert yaml.safe_load(tuned.read_text())["verdict"] == "tuned"
    return tuned, path


def test_a_tuned_file_is_still_faster_and_says_so(tuned_file, capsys):
    tuned, cfg = tuned_file
    code, out, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg))
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("still 1.") and "x faster (95% interval " in first and "p=" in first
    # the fake's winner is 1.3x the defaults; the line shows it with two decimals
    speedup = float(first.split()[1].rstrip("x"))
    assert speedup == pytest.approx(1.3, rel=0.05)
    # progress went to stderr: the rounds, in fresh processes, interleaved
    assert "final round 1/" in err and "final round 1/" not in out
    assert "preflight" in err and "preflight" not in out


def test_check_shares_validations_rounds_and_rule(tuned_file, monkeypatch):
    # one code path: check runs validate.final_rounds and decides by verdict.judge
    calls = []
    final_rounds, judge = validate.final_rounds, verdict.judge
    monkeypatch.setattr(validate, "final_rounds",
                        lambda *a, **k: (calls.append("rounds"), final_rounds(*a, **k))[1])
    monkeypatch.setattr(verdict, "judge",
                        lambda *a, **k: (calls.append("judge"), judge(*a, **k))[1])
    tuned, cfg = tuned_file
    checked = check.run(check.read(str(tuned), check.Options()), config.load(cfg),
                        check.Options(rounds=4), lambda line: None)
    assert calls == ["rounds", "judge"]
    assert checked.outcome == check.STILL_FASTER
    measured = checked.record["measured"]
    assert measured["rounds"] == 4 and len(measured["throughput"]["per_process"]) == 4
    assert measured["level"] == pytest.approx(0.05)   # --rounds: one look, all of alpha
    assert measured["significant"] and measured["speedup_ci95"][0] > 1


def test_a_file_that_no_longer_wins_exits_1(tuned_file, capsys, monkeypatch):
    # here every setting measures the same: the file's settings are no longer faster
    monkeypatch.setenv("FAKE_SHAPE", "flat")
    tuned, cfg = tuned_file
    code, out, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg), "--rounds", "4")
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == "no longer faster than the defaults here: re-tune"
    assert "measured 0.9" in lines[1] or "measured 1.0" in lines[1]


def test_json_is_one_document_with_the_files_whole_claim(tuned_file, capsys):
    tuned, cfg = tuned_file
    doc = yaml.safe_load(tuned.read_text())
    doc["result"]["accuracy"] = {"metric": "max_abs", "tolerance": 0.01, "deviation": 0.001,
                                 "limit": 0.01, "samples": 64}   # a field #23 may add
    tuned.write_text(yaml.safe_dump(doc))
    code, out, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg), "--rounds", "4",
                             "--format", "json")
    assert code == 0, err
    record = json.loads(out)
    assert record["schema"] == "tuner.check" and record["schema_version"] == 1
    assert record["outcome"] == "still_faster" and record["exit_code"] == 0
    assert record["message"].startswith("still ")
    assert record["recorded"]["result"] == json.loads(json.dumps(doc["result"]))
    assert record["recorded"]["settings"] == doc["settings"]
    # the file's deviation is re-measured, judged by its own metric and tolerance
    assert record["measured"]["accuracy"]["metric"] == "max_abs"
    assert record["measured"]["accuracy"]["tolerance"] == 0.01
    assert record["measured"]["baseline_throughput"]["unit"] == "samples/s"


def test_a_defaults_file_has_nothing_to_check(small_study, capsys):
    path = small_study.tuned_path
    doc = yaml.safe_load(open(path))
    doc["verdict"] = "defaults"
    Path(path).write_text(yaml.safe_dump(doc))
    # no workload is needed, and no child starts (no fake worker configured here)
    code, out, err = run_cli(capsys, "check", path)
    assert (code, err) == (0, "")
    assert out == f"nothing to check: {path} keeps TensorFlow's defaults\n"
    code, out, _ = run_cli(capsys, "check", path, "--format", "json")
    assert code == 0 and json.loads(out)["outcome"] == "nothing_to_check"


def test_the_workload_comes_from_the_command_line_never_from_the_file(tuned_file, capsys,
                                                                      tmp_path):
    tuned, cfg = tuned_file
    doc = yaml.safe_load(tuned.read_text())
    # a hostile file names another workload: it is never loaded
    doc["workload"] = {"model": "/nonexistent/evil.py:build", "data": "/nonexistent/evil.py:d",
                       "mode": "predict", "config": "/nonexistent/evil.yaml"}
    tuned.write_text(yaml.safe_dump(doc))
    code, out, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg), "--rounds", "4")
    assert code == 0, err
    assert "evil" not in out + err
    # result fields that are not numbers: the evidence is refused in one inert line, no child
    doc["result"]["speedup_ci95"] = ["\x1b]0;evil\x07", 2]
    tuned.write_text(yaml.safe_dump(doc))
    code, out, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg), "--rounds", "4")
    assert_one_error_line(code, err, "not validated", "result.speedup_ci95")
    assert "\x1b" not in out + err and "preflight" not in err
    # and without --config or --model, a tuned verdict cannot be checked
    doc["result"]["speedup_ci95"] = [1.2, 1.4]
    tuned.write_text(yaml.safe_dump(doc))
    code, _, err = run_cli(capsys, "check", str(tuned))
    assert_one_error_line(code, err, "--model", "--config")


def test_a_file_pinned_to_cpus_not_here_is_refused(tuned_file, capsys):
    tuned, cfg = tuned_file
    doc = yaml.safe_load(tuned.read_text())
    doc["settings"]["cpus"] = [4096]
    tuned.write_text(yaml.safe_dump(doc))
    code, _, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg))
    assert_one_error_line(code, err, str(tuned), "settings.cpus", "4096", "re-tune")
    assert "preflight" not in err   # refused before any child


@pytest.mark.parametrize("argv, needles", [
    (["--size", "2"], ["--size 2", "not a sizes file", "drop --size"]),
    (["--rounds", "3"], ["--rounds", "'3'", ">= 4"]),
    (["--seconds", "0"], ["--seconds", "'0'"]),
    (["--format", "yaml"], ["--format", "yaml", "json"]),
])
def test_bad_check_flags_give_one_line(tuned_file, capsys, argv, needles):
    tuned, cfg = tuned_file
    code, _, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg), *argv)
    assert_one_error_line(code, err, *needles)


def test_undeclared_knobs_in_the_file_are_refused(tuned_file, capsys):
    tuned, cfg = tuned_file
    doc = yaml.safe_load(tuned.read_text())
    doc["settings"]["knobs"] = {"map_parallelism": 4}
    # the file records the space its search declared; this config declares none of it
    doc.setdefault("search", {})["declared_knobs"] = {"map_parallelism": [1, 4]}
    tuned.write_text(yaml.safe_dump(doc))
    code, _, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg))
    assert_one_error_line(code, err, "settings.knobs", "map_parallelism", "not declared")


def test_a_sizes_row_is_checked_against_the_defaults_on_its_own_cpus(fake_worker, tmp_path,
                                                                     monkeypatch, capsys):
    # throughput grows with the CPUs a process is pinned to: the 1-CPU row wins only against
    # the defaults pinned to the same CPU, as the size run validated it
    monkeypatch.setenv("FAKE_SCALING", "linear")
    (tmp_path / "wl.py").write_text(DUMMY_WORKLOAD)
    path = write_text(tmp_path / "s.yaml", (FAST + SPACE).replace("n_trials: 8", "n_trials: 14"))
    outcome = sizing.run(config.load(path), sizing.Options(cpus=[1]), lambda line: None)
    row = outcome.doc["sizes"][0]
    assert row["verdict"] == "tuned", row
    code, _, err = run_cli(capsys, "check", outcome.path, "--config", str(path))
    assert_one_error_line(code, err, "sizes file", "--size K")
    code, out, err = run_cli(capsys, "check", outcome.path, "--size", "1", "--config", str(path),
                             "--rounds", "4", "--format", "json")
    assert code == 0, err
    record = json.loads(out)
    assert record["size"] == 1 and record["outcome"] == "still_faster"
    # about 1.3x, not the 0.65x an unpinned 2-CPU baseline would give
    assert record["measured"]["speedup"] == pytest.approx(1.3, rel=0.05)


@pytest.mark.tf
def test_check_on_the_quickstart_with_real_tensorflow(tmp_path):
    """A real tuned file (its settings those of a quickstart search's winner) re-measured on
    configs/quickstart.yaml in real TensorFlow children; the verdict is whatever this machine
    says, but it is a verdict: exit 0 or 1, the matching line, the rounds in the JSON."""
    skip_without_tensorflow()
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    tuned = tmp_path / "tuned.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "branchy.yaml", tuned)
    doc = yaml.safe_load(tuned.read_text())
    doc["workload"]["config"] = "/nonexistent/never-read.yaml"
    tuned.write_text(yaml.safe_dump(doc))
    env = {k: v for k, v in os.environ.items() if k != "TUNER_WORKER"}
    out = subprocess.run(
        [sys.executable, "-m", "tuner", "check", str(tuned), "--config",
         str(tmp_path / "configs" / "quickstart.yaml"), "--rounds", "4", "--seconds", "1",
         "--format", "json"], capture_output=True, text=True, env=env, timeout=900,
        cwd=tmp_path)
    assert out.returncode in (0, 1), out.stderr[-3000:]
    record = json.loads(out.stdout)
    assert record["exit_code"] == out.returncode
    assert record["outcome"] == ("still_faster" if out.returncode == 0 else "no_longer_faster")
    measured = record["measured"]
    assert measured["rounds"] >= 3
    assert len(measured["throughput"]["per_process"]) == measured["rounds"]
    assert all(v > 0 for v in measured["baseline_throughput"]["per_process"])
    # the speedup is the ratio of the medians of what was measured (a throughput objective)
    assert measured["speedup"] == pytest.approx(
        measured["throughput"]["median"] / measured["baseline_throughput"]["median"], rel=1e-3)
    assert measured["significant"] is (out.returncode == 0)
    assert record["machine"]["tf_version"] != "fake-1.0"
    assert "final round 1/4" in out.stderr


def test_a_model_files_result_is_checked_with_model_and_writes_nothing(fake_worker, tmp_path,
                                                                        capsys):
    model = tmp_path / "net.keras"
    model.write_bytes(b"PK\x03\x04 not really")   # the parent only looks at the name
    code, _, err = run_cli(capsys, "search", "--model", str(model), "--n-trials", "6")
    assert code == 0, err
    tuned = Path("results/net/tuned.yaml")
    before = sorted(str(p) for p in tmp_path.rglob("*") if "lock" not in p.name)
    code, out, err = run_cli(capsys, "check", str(tuned), "--model", str(model), "--rounds", "4",
                             "--format", "json")
    record = json.loads(out)
    verdict_written = yaml.safe_load(tuned.read_text())["verdict"]
    if verdict_written == "defaults":
        assert code == 0 and record["outcome"] == "nothing_to_check"
    else:
        assert code in (0, 1), err
        assert record["measured"]["rounds"] >= 3
        assert "generated inputs" in err     # the model file's workload, from --model
    # no generated config, study or file was written by the check
    assert sorted(str(p) for p in tmp_path.rglob("*") if "lock" not in p.name) == before


def _with_bf16(tuned_file):
    """The fake search's tuned file with bf16 math, measured within its tolerance 0.05 when
    tuned (format_version 2), and its config."""
    tuned, cfg = tuned_file
    doc = yaml.safe_load(tuned.read_text())
    doc["format_version"] = 2
    doc["settings"]["env"] = {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}
    doc["result"]["accuracy"] = {"metric": "rel_l2", "tolerance": 0.05, "deviation": 0.003,
                                 "limit": 0.05, "samples": 16}
    tuned.write_text(yaml.safe_dump(doc))
    return tuned, cfg


@pytest.mark.parametrize("deviation,code", [(0.003, 0), (0.2, 1)])
def test_a_reduced_precision_file_is_held_to_its_tolerance_here(tuned_file, capsys, monkeypatch,
                                                               deviation, code):
    # the file turns on bf16 math, measured within its tolerance 0.05 when tuned; here the
    # guard re-measures its outputs' deviation from TensorFlow's defaults on the same samples
    from tuner.base import host

    monkeypatch.setattr(host, "_cpu_flags", lambda root: ["avx512_bf16"])
    monkeypatch.setenv("FAKE_DEVIATION", json.dumps({"env.ONEDNN_DEFAULT_FPMATH_MODE=BF16":
                                                     deviation}))
    tuned, cfg = _with_bf16(tuned_file)
    code_, out, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg), "--rounds", "4",
                              "--format", "json")
    assert code_ == code, err
    record = json.loads(out)
    assert record["outcome"] == ("still_faster" if code == 0 else "no_longer_faster")
    if code:   # beyond the file's tolerance: the run fails its round, never "still faster"
        assert "outputs beyond the accuracy limit: rel_l2 0.2" in record["measured"]["failed"]
        assert record["measured"]["accuracy"] is None
    else:
        measured = record["measured"]["accuracy"]
        assert measured["metric"] == "rel_l2" and measured["tolerance"] == 0.05
        assert measured["deviation"] == pytest.approx(deviation)
    code_, out, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg), "--rounds", "4")
    assert code_ == code
    assert ("outputs beyond the accuracy limit: rel_l2 0.2" in out if code
            else "outputs within the accuracy limit: rel_l2 0.003" in out)


def test_reduced_precision_is_refused_on_a_cpu_without_it(tuned_file, capsys, monkeypatch):
    from tuner.base import host

    monkeypatch.setattr(host, "_cpu_flags", lambda root: ["avx2"])
    tuned, cfg = _with_bf16(tuned_file)
    code, _, err = run_cli(capsys, "check", str(tuned), "--config", str(cfg))
    assert_one_error_line(code, err, "avx512_bf16", "re-run the search on this machine")
    assert "preflight" not in err   # refused before any child
