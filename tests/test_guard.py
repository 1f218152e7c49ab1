"""The accuracy guard and the reduced-precision knobs, with the fake worker (which reports a
known deviation per setting, FAKE_DEVIATION) on simulated CPUs (host facts: the CPU's flags)."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import yaml
from helpers import (
    FAST,
    assert_one_error_line,
    evidence,
    plain_machine,
    run_cli,
    run_search,
    trials,
)

from tuner import config, knobs
from tuner.base import host
from tuner.child import guard
from tuner.errors import ConfigError
from tuner.knobs import space
from tuner.tuned import reader as tunedfile

FPMATH = "env.ONEDNN_DEFAULT_FPMATH_MODE"
AMX = ["avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]

SMALL_SPACE = """\
space:
  intra_op_parallelism_threads: [1, 2, 3]
  inter_op_parallelism_threads: [1, 2]
  tf_data: {private_threadpool_size: default, max_intra_op_parallelism: default}
  env: {TF_ENABLE_ONEDNN_OPTS: default}
  allocator: default
  instances: default
"""

# only oneDNN's math mode may move: a grid of [None, BF16] (with the CPU's flags); with
# FAKE_SHAPE=flat only FAKE_BF16_GAIN makes a difference
PRECISION_ONLY = FAST.replace("n_trials: 8", "n_trials: 4\n  sampler: grid") + """\
space:
  intra_op_parallelism_threads: default
  inter_op_parallelism_threads: default
  tf_data: {private_threadpool_size: default, max_intra_op_parallelism: default}
  env: {TF_ENABLE_ONEDNN_OPTS: default, OMP_NUM_THREADS: default}
  allocator: default
  instances: default
  cpus: default
  precision: {auto_mixed_precision_onednn_bfloat16: default}
"""


@pytest.fixture
def cpu(monkeypatch):
    """``cpu(flags)``: the CPU the search detects has these instruction flags; throughput is
    flat but for FAKE_BF16_GAIN."""
    def set_flags(flags: list[str]) -> None:
        monkeypatch.setattr(host, "_cpu_flags", lambda root: list(flags))
        monkeypatch.setenv("FAKE_SHAPE", "flat")
    return set_flags


def _doc(outcome) -> dict:
    return yaml.safe_load(open(outcome.tuned_path))


def test_an_infeasible_trial_is_never_adopted_however_fast(fake_worker, write_config,
                                                           monkeypatch, cpu):
    # the fake peaks at intra=2 (1.3x with inter=1, adopted without the guard: test_search);
    # here its outputs drift beyond float noise
    cpu([])
    monkeypatch.setenv("FAKE_SHAPE", "peak")
    monkeypatch.setenv("FAKE_DEVIATION", json.dumps({"intra_op_parallelism_threads=2": 0.5}))
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 14") + SMALL_SPACE)
    doc = _doc(run_search(path))
    assert doc["settings"]["intra_op_parallelism_threads"] != 2
    listed = doc["search"]["accuracy_infeasible"]
    measured = [t for t in trials() if t.state == optuna.trial.TrialState.COMPLETE
                and t.user_attrs["settings"]["intra_op_parallelism_threads"] == 2
                and "duplicate_of" not in t.user_attrs]
    assert measured and sorted(r["trial"] for r in listed) == sorted(t.number for t in measured)
    assert all(r["deviation"]["rel_l2"] == 0.5 for r in listed)
    for t in measured:   # Optuna's constraint: infeasible when > 0
        assert t.user_attrs["accuracy_excess"] == pytest.approx(0.5 - guard.NOISE_REL_L2)
        assert t.system_attrs["constraints:accuracy"] > 0
    assert all(c["settings"]["intra_op_parallelism_threads"] != 2
               for c in doc["validation"]["candidates"])
    assert doc["result"]["accuracy"]["tolerance"] is None
    assert doc["result"]["accuracy"]["limit"] == guard.NOISE_REL_L2


def test_with_a_tolerance_bf16_is_searched_adopted_and_its_deviation_recorded(
        fake_worker, write_config, monkeypatch, cpu, capsys):
    cpu(AMX)
    monkeypatch.setenv("FAKE_BF16_GAIN", "1.5")
    monkeypatch.setenv("FAKE_DEVIATION", json.dumps({f"{FPMATH}=BF16": 0.002}))
    outcome = run_search(write_config(PRECISION_ONLY), accuracy_tolerance=0.05)
    doc = _doc(outcome)
    assert doc["verdict"] == "tuned"
    assert doc["settings"]["env"] == {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}
    accuracy = doc["result"]["accuracy"]
    assert accuracy["metric"] == "rel_l2" and accuracy["tolerance"] == 0.05
    assert accuracy["deviation"] == 0.002 and accuracy["limit"] == 0.05
    assert accuracy["samples"] == 16 and accuracy["processes"] >= 4
    assert any("tolerance 0.05" in line for line in outcome.lines)
    # the file reads back; a CPU without the instructions refuses it in one line
    read = tunedfile.read(outcome.tuned_path)
    tunedfile.check_cpu(read.doc, "t.yaml", AMX)
    with pytest.raises(ConfigError, match="avx512_bf16 or amx_bf16"):
        tunedfile.check_cpu(read.doc, "t.yaml", ["avx2"])
    # show, compare and report say it
    shown = "rel_l2 0.002 (tolerance 0.05, 16 samples)"
    code, out, _ = run_cli(capsys, "show", outcome.tuned_path)
    assert code == 0 and "accuracy" in out and shown in out
    code, out, _ = run_cli(capsys, "compare", outcome.tuned_path, outcome.tuned_path)
    assert code == 0 and "accuracy (deviation)" in out and shown in out
    code, out, _ = run_cli(capsys, "report", "--storage", "sqlite:///results/study.db")
    assert code == 0 and f"accuracy: {shown}" in out


def test_beyond_the_tolerance_bf16_is_listed_and_the_defaults_kept(
        fake_worker, write_config, monkeypatch, cpu, capsys):
    cpu(AMX)
    monkeypatch.setenv("FAKE_BF16_GAIN", "1.5")
    monkeypatch.setenv("FAKE_DEVIATION", json.dumps({f"{FPMATH}=BF16": 0.002}))
    doc = _doc(run_search(write_config(PRECISION_ONLY), accuracy_tolerance=0.001))
    assert doc["verdict"] == "defaults"
    assert "ONEDNN_DEFAULT_FPMATH_MODE" not in (doc["settings"].get("env") or {})
    (row,) = doc["search"]["accuracy_infeasible"]
    assert "fpmath=BF16" in row["settings"] and row["deviation"]["rel_l2"] == 0.002
    code, out, _ = run_cli(capsys, "report", "--storage", "sqlite:///results/study.db")
    assert code == 0 and f"never adopted): #{row['trial']} (rel_l2 0.002)" in out
    assert doc["result"]["accuracy"]["deviation"] == 0.0


def test_without_a_tolerance_no_precision_knob_and_the_opening_says_how_to_opt_in(
        fake_worker, write_config, monkeypatch, cpu):
    cpu(AMX)
    monkeypatch.setenv("FAKE_BF16_GAIN", "1.5")
    outcome = run_search(write_config(PRECISION_ONLY.replace("sampler: grid", "sampler: random")))
    assert all(FPMATH not in t.params and t.user_attrs["settings"][FPMATH] is None
               for t in trials())
    assert any("--accuracy-tolerance 0.05" in line and "env.ONEDNN_DEFAULT_FPMATH_MODE" in line
               for line in outcome.lines)
    assert "ONEDNN_DEFAULT_FPMATH_MODE" not in (_doc(outcome)["settings"].get("env") or {})


def test_without_the_cpu_flags_no_precision_knob_even_with_a_tolerance(
        fake_worker, write_config, monkeypatch, cpu):
    cpu(["avx2", "avx512f"])
    monkeypatch.setenv("FAKE_BF16_GAIN", "1.5")
    outcome = run_search(write_config(PRECISION_ONLY.replace("sampler: grid", "sampler: random")),
                         accuracy_tolerance=0.05)
    assert all(t.user_attrs["settings"][FPMATH] is None for t in trials())
    assert not any("reduced precision not searched" in line for line in outcome.lines)


def test_a_baseline_beyond_float_noise_refuses_the_workload(fake_worker, write_config,
                                                           monkeypatch, capsys, cpu):
    cpu([])
    # TensorFlow's defaults drift between processes: the builder is not deterministic
    monkeypatch.setenv("FAKE_DEVIATION", json.dumps({"intra_op_parallelism_threads=0": 0.01}))
    code, out, err = run_cli(capsys, "search", "--config", str(write_config()))
    assert_one_error_line(code, err, "differ between two runs at TensorFlow's defaults",
                          "rel_l2 0.01", "deterministic", exit_code=code)
    assert code != 0


def _space(machine, mode="predict", precision=False, overrides=None):
    return space.build_space(machine, overrides or {}, mode=mode, precision=precision,
                             pipeline=space.Pipeline(options=(), ops=()))


def test_the_space_offers_each_precision_mode_only_with_its_instructions():
    bf16 = plain_machine(2, cpu_flags=("avx512_bf16",))
    both = plain_machine(2, cpu_flags=("amx_bf16", "avx512_fp16"))
    none = plain_machine(2)
    assert _space(bf16, precision=True).searched[FPMATH] == [None, "BF16"]
    assert _space(both, precision=True).searched[FPMATH] == [None, "BF16", "F16"]
    assert knobs.PRECISION_REWRITE in _space(both, precision=True).searched
    assert FPMATH not in _space(none, precision=True).searched
    assert FPMATH not in _space(bf16, precision=False).searched
    assert _space(bf16, precision=False).fixed[FPMATH] is None
    # the Keras policy only where a config lists it
    assert knobs.PRECISION_POLICY not in _space(bf16, precision=True).searched
    listed = _space(bf16, precision=True,
                    overrides={knobs.PRECISION_POLICY: [None, "mixed_bfloat16"]})
    assert listed.searched[knobs.PRECISION_POLICY] == [None, "mixed_bfloat16"]


def test_a_precision_knob_asked_for_without_a_tolerance_or_the_cpu_is_a_config_error():
    bf16 = plain_machine(2, cpu_flags=("avx512_bf16",))
    with pytest.raises(ConfigError, match="accuracy tolerance.*accuracy.train"):
        _space(bf16, mode="train", precision=False, overrides={FPMATH: "BF16"})
    with pytest.raises(ConfigError, match=r"needs a CPU with avx512_fp16 or amx_fp16"):
        _space(bf16, precision=True, overrides={FPMATH: "F16"})


def test_train_mode_searches_precision_only_with_accuracy_train(tmp_path):
    (tmp_path / "wl.py").write_text("def build_model():\n    pass\n\ndef build_data():\n    pass\n")
    base = "workload: {model: wl.py:build_model, data: wl.py:build_data, mode: train}\n"
    plain = config.parse(yaml.safe_load(base + "accuracy: {tolerance: 0.05}\n"),
                         tmp_path / "a.yaml")
    assert not plain.accuracy.allows_precision("train")
    opted = config.parse(yaml.safe_load(base + "accuracy: {tolerance: 0.05, train: true}\n"),
                         tmp_path / "a.yaml")
    assert opted.accuracy.allows_precision("train")
    assert opted.accuracy.train


@pytest.mark.parametrize("body, needle", [
    ("accuracy: {tolerance: -1}", "accuracy.tolerance: expected a number > 0 or null, got -1"),
    ("accuracy: {metric: top1, tolerance: 1.5}", "between 0 and 1"),
    ("accuracy: {metric: l1}", "'l1' is not allowed; allowed: rel_l2, max_abs, top1"),
    ("accuracy: {train: true}", "accuracy.train: applies to workload mode train"),
    ("accuracy: {tolerance: .nan}", "accuracy.tolerance"),
    ("accuracy: {bogus: 1}", "accuracy.bogus: unknown key"),
])
def test_a_bad_accuracy_section_is_one_error(tmp_path, body, needle):
    (tmp_path / "wl.py").write_text("def build_model():\n    pass\n\ndef build_data():\n    pass\n")
    text = "workload: {model: wl.py:build_model, data: wl.py:build_data, mode: predict}\n" + body
    with pytest.raises(ConfigError, match=None) as info:
        config.parse(yaml.safe_load(text), tmp_path / "a.yaml")
    assert needle in str(info.value)


def test_the_flags_set_the_tolerance_and_the_metric(tmp_path, capsys):
    (tmp_path / "wl.py").write_text("def build_model():\n    pass\n\ndef build_data():\n    pass\n")
    path = tmp_path / "a.yaml"
    path.write_text("workload: {model: wl.py:build_model, data: wl.py:build_data, "
                    "mode: predict}\n")
    cfg = config.with_overrides(config.load(path), accuracy_tolerance=0.1,
                                accuracy_metric="top1")
    assert (cfg.accuracy.metric, cfg.accuracy.tolerance) == ("top1", 0.1)
    code, _, err = run_cli(capsys, "search", "--config", str(path), "--accuracy-tolerance", "0")
    assert code == 2 and "--accuracy-tolerance" in err and "expected a number > 0" in err


# -- the tuned file's evidence --------------------------------------------------------------------

def _tuned(tmp_path, env=None, precision=None, accuracy=None, version=2):
    settings = {"intra_op_parallelism_threads": 0, "inter_op_parallelism_threads": 0,
                "env": env or {}, **({"precision": precision} if precision else {})}
    ev = evidence(**({"accuracy": accuracy} if accuracy else {}))
    doc = {"format_version": version, "verdict": "tuned", "settings": settings,
           "machine": dict(host.detect().as_dict(), tf_version=host.installed_tf_version()),
           **ev}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_reduced_precision_without_a_measured_deviation_within_tolerance_is_refused(tmp_path):
    bf16 = {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}
    with pytest.raises(ConfigError, match="result.accuracy, the guard's measured deviation, is "
                                          "missing"):
        tunedfile.read(_tuned(tmp_path, env=bf16, version=1))
    over = {"metric": "rel_l2", "tolerance": 0.01, "deviation": 0.02}
    with pytest.raises(ConfigError, match=r"deviation \(rel_l2 0.02\) is beyond the tolerance"):
        tunedfile.read(_tuned(tmp_path, env=bf16, accuracy=over))
    none = {"metric": "rel_l2", "tolerance": None, "deviation": 0.002}
    with pytest.raises(ConfigError, match="tolerance None"):
        tunedfile.read(_tuned(tmp_path, precision={
            "auto_mixed_precision_onednn_bfloat16": True}, accuracy=none))
    ok = {"metric": "top1", "tolerance": 0.05, "deviation": 0.97}
    assert tunedfile.read(_tuned(tmp_path, env=bf16, accuracy=ok)).verdict == "tuned"
    # float32 files of both versions read as before
    assert tunedfile.read(_tuned(tmp_path, version=1)).verdict == "tuned"
    with pytest.raises(ConfigError, match="settings.precision.turbo: unknown"):
        tunedfile.read(_tuned(tmp_path, precision={"turbo": True}, accuracy=ok))


# -- the metrics ----------------------------------------------------------------------------------

def test_the_metrics_and_the_limits():
    ref = [np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]])]
    out = [np.array([[1.0, 2.0, 3.1], [2.0, 3.5, 0.0]])]
    found = guard.deviation(out, ref)
    assert found["max_abs"] == pytest.approx(2.5)
    norm = np.linalg.norm
    assert found["rel_l2"] == pytest.approx(norm(out[0] - ref[0]) / norm(ref[0]))
    assert found["top1"] == 0.5          # the second sample's top class changed
    assert guard.deviation([np.ones((2, 1))], [np.ones((2, 1))])["top1"] is None
    assert guard.deviation([np.array([np.nan])], [np.ones(1)])["nonfinite"]
    assert guard.excess({"rel_l2": 5e-5}, "rel_l2", None) < 0
    assert guard.excess({"rel_l2": 2e-4}, "rel_l2", None) > 0
    assert guard.excess({"rel_l2": 0.5, "top1": 0.96}, "top1", 0.05) < 0   # floor 0.95
    assert guard.excess({"rel_l2": 0.0, "top1": 0.9}, "top1", 0.05) > 0
    assert guard.excess({"rel_l2": None, "nonfinite": True}, "rel_l2", 0.05) == float("inf")
    assert guard.excess(None, "rel_l2", 0.05) is None


def test_a_second_default_run_whose_outputs_differ_is_refused(tmp_path):
    inputs = [np.arange(8.0).reshape(4, 2)]
    guard.save(str(tmp_path / "a.npz"), inputs, [np.ones((4, 3))], 4)
    guard.save(str(tmp_path / "b.npz"), inputs, [np.ones((4, 3)) + 1e-9], 4)
    guard.save(str(tmp_path / "c.npz"), inputs, [np.ones((4, 3)) * 1.01], 4)
    assert guard.differs(str(tmp_path / "b.npz"), str(tmp_path / "a.npz")) is None
    why = guard.differs(str(tmp_path / "c.npz"), str(tmp_path / "a.npz"))
    assert why and "differ between two runs" in why and "rel_l2 0.01" in why


def test_apply_and_the_launcher_refuse_reduced_precision_on_a_cpu_without_it(tmp_path, cpu):
    from tuner.production import apply as production
    from tuner.production import launch

    cpu(["avx2", "avx512f"])
    ok = {"metric": "rel_l2", "tolerance": 0.05, "deviation": 0.003}
    path = _tuned(tmp_path, env={"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}, accuracy=ok)
    needle = ("env.ONEDNN_DEFAULT_FPMATH_MODE=BF16 needs a CPU with avx512_bf16 or amx_bf16; "
              "this CPU has avx2, avx512f")
    with pytest.raises(ConfigError, match=needle):
        production.apply(path)
    with pytest.raises(ConfigError, match=needle):
        launch.run(str(path), ["true"])
    # the export is for another machine: it carries the variable, with its accuracy evidence
    assert "ONEDNN_DEFAULT_FPMATH_MODE=BF16" in launch.export(str(path), "shell")


def test_run_export_and_tf_serving_say_the_in_process_precision_is_not_carried(tmp_path):
    from tuner.production import launch

    ok = {"metric": "rel_l2", "tolerance": 0.05, "deviation": 0.005}
    path = str(_tuned(tmp_path, precision={"auto_mixed_precision_onednn_bfloat16": True},
                      accuracy=ok))
    shell = launch.export(path, "shell")
    assert ("not carried: reduced precision set inside the process "
            "(precision.auto_mixed_precision_onednn_bfloat16=true): call cfg = tuner.apply()"
            in shell)
    serving = launch.export(path, "tf-serving")
    assert ("not carried: precision.auto_mixed_precision_onednn_bfloat16 act inside a Python "
            "process" in serving)
    assert serving.count("not carried") == 1


def test_an_interrupted_search_writes_the_best_feasible_trial_not_the_fastest(tmp_path):
    from tuner.search import verdict
    from tuner.search.outcome import Searched

    def trial(number, value, rel, role=None):
        settings = {**knobs.default_settings(), FPMATH: "BF16" if rel else None}
        return optuna.trial.create_trial(
            value=value, params={}, distributions={},
            user_attrs={"settings": settings, "throughput": {"median": value, "min": value,
                                                            "max": value},
                        "accuracy": {"rel_l2": rel, "max_abs": rel, "top1": 1.0,
                                     "samples": 16},
                        **({"role": role} if role else {})})

    trials_ = [trial(0, 100.0, 0.0, "baseline"), trial(1, 200.0, 0.01), trial(2, 120.0, 0.0)]
    for number, t in enumerate(trials_):
        t.number = number
    (tmp_path / "wl.py").write_text("def build_model():\n    pass\n\ndef build_data():\n    pass\n")
    cfg = config.parse(yaml.safe_load(
        "workload: {model: wl.py:build_model, data: wl.py:build_data, mode: predict}\n"
        "accuracy: {tolerance: 0.001}\n"), tmp_path / "a.yaml")
    decided = verdict.unvalidated(Searched(trials_, 0, "tpe"), cfg)
    assert decided.settings[FPMATH] is None and decided.result["throughput"]["median"] == 120.0
    assert decided.result["accuracy"]["deviation"] == 0.0
