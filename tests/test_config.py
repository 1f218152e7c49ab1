"""The study config: parsing, defaults, flag overrides, and every config and flag error (exit
code 2, one line naming the field and the bad value, nothing written)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from helpers import GOOD, assert_one_error_line, run_cli

from tuner import cli, config
from tuner.errors import ConfigError


def search_error(capsys, path, *needles):
    """``search --config PATH`` fails before any work: one error line naming each needle."""
    code, _, err = run_cli(capsys, "search", "--config", str(path))
    assert_one_error_line(code, err, *needles)


def test_minimal_form_parses_with_defaults(write_config):
    cfg = config.load(write_config(GOOD))
    assert cfg.workload.mode == "predict"
    assert cfg.workload.model == "wl.py:build_model"
    assert cfg.study_name == "study"
    assert cfg.storage == "sqlite:///results/study.db"
    assert cfg.output == "results/study/tuned.yaml"
    assert cfg.search.n_trials >= 10 and cfg.validate.rounds >= 4


BAD_CONFIGS = [
    ("workload: [unclosed", ["malformed YAML", "line 1"]),
    ("- just\n- a list\n", ["expected a mapping"]),
    (GOOD + "colour: blue\n", ["colour", "unknown key", "allowed: workload"]),
    (GOOD + "search:\n  n_trail: 3\n", ["search.n_trail", "unknown key", "n_trials"]),
    (GOOD.replace("predict", "serve"), ["workload.mode", "'serve'", "predict, train, data"]),
    (GOOD.replace("  model: wl.py:build_model\n", ""), ["workload.model", "missing"]),
    (GOOD.replace("wl.py:build_model", "wl.py"), ["workload.model", "'wl.py'", "file.py:function"]),
    (GOOD.replace("wl.py:build_data", "nothere.py:build_data"), ["workload.data", "nothere.py",
                                                                  "does not exist"]),
    (GOOD + "search:\n  n_trials: -3\n", ["search.n_trials", "-3", ">= 1"]),
    (GOOD + "search:\n  n_trials: many\n", ["search.n_trials", "'many'"]),
    (GOOD + "search:\n  sampler: cmaes\n",
     ["search.sampler", "'cmaes'", "auto, grid, tpe, random"]),
    (GOOD + "search:\n  trial_timeout: 0\n", ["search.trial_timeout", "> 0"]),
    (GOOD + "measure:\n  windows: 1\n", ["measure.windows", ">= 2"]),
    (GOOD + "validate:\n  rounds: 3\n", ["validate.rounds", ">= 4"]),
    (GOOD + "validate:\n  candidates: 0\n", ["validate.candidates", "0", ">= 1"]),
    (GOOD + "validate:\n  alpha: 2\n", ["validate.alpha", "between 0 and 1"]),
    (GOOD + "validate:\n  min_speedup: 0.9\n", ["validate.min_speedup", "0.9", ">= 1.0"]),
    (GOOD + "space:\n  threads: [1, 2]\n", ["space.threads", "unknown key"]),
    (GOOD + "space:\n  intra_op_parallelism_threads: [1, -2]\n",
     ["space.intra_op_parallelism_threads", "-2", "integer >= 0"]),
    (GOOD + "space:\n  intra_op_parallelism_threads: []\n",
     ["space.intra_op_parallelism_threads", "empty list"]),
    (GOOD + "space:\n  tf_data:\n    cycle: [1]\n", ["space.tf_data.cycle", "unknown knob"]),
    (GOOD + "space:\n  env:\n    TF_ENABLE_ONEDNN_OPTS: [yes]\n",
     ["space.env.TF_ENABLE_ONEDNN_OPTS", "True", "'0', '1'"]),
    (GOOD + "objective: latency\n", ["objective", "'latency'", "throughput"]),
    (GOOD + "study:\n  name: 'my study!'\n", ["study.name", "'my study!'"]),
    (GOOD + "study:\n  storage: results/x.db\n", ["study.storage", "not a storage URL"]),
    (GOOD + "study:\n  storage: redis://localhost\n", ["study.storage", "'redis'", "sqlite"]),
    (GOOD + "output: results/tuned.json\n", ["output", "tuned.json", ".yaml"]),
]


@pytest.mark.parametrize("body,needles", BAD_CONFIGS, ids=[n[0] for _, n in BAD_CONFIGS])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(capsys, write_config, tmp_path, body,
                                                          needles):
    path = write_config(body)
    code, out, err = run_cli(capsys, "search", "--config", str(path))
    assert_one_error_line(code, err, str(path), *needles)
    assert not (tmp_path / "results").exists()


def test_missing_config_file(capsys, tmp_path):
    code, out, err = run_cli(capsys, "search", "--config", "nope.yaml")
    assert_one_error_line(code, err, "nope.yaml", "not found")


@pytest.mark.parametrize("flags,needles", [
    (["--n-trials", "0"], ["--n-trials", "'0'", "positive integer"]),
    (["--n-trials", "ten"], ["--n-trials", "'ten'"]),
    (["--timeout", "-5"], ["--timeout", "'-5'"]),
    (["--trial-timeout", "soon"], ["--trial-timeout", "'soon'"]),
    (["--seed", "-1"], ["--seed", "'-1'"]),
    (["--max-trials", "0"], ["--max-trials", "'0'", "positive integer"]),
    (["--timeout", "nan"], ["--timeout", "'nan'"]),
    (["--storage", "nowhere"], ["--storage", "'nowhere'", "storage URL"]),
    (["--study-name", "a b"], ["--study-name", "'a b'"]),
    (["--output", "x.txt"], ["--output", "x.txt", ".yaml"]),
    (["--colour", "blue"], ["unrecognized arguments", "--colour"]),
])
def test_bad_flags_are_one_line_exit_2(capsys, write_config, tmp_path, flags, needles):
    path = write_config(GOOD)
    code, out, err = run_cli(capsys, "search", "--config", str(path), *flags)
    assert_one_error_line(code, err, *needles)
    assert not (tmp_path / "results").exists()


def test_missing_config_flag(capsys):
    code, out, err = run_cli(capsys, "search")
    assert_one_error_line(code, err, "--config")


def test_flags_override_file_and_move_default_paths(write_config):
    cfg = config.load(write_config(GOOD + "search:\n  n_trials: 5\n"))
    cfg = config.with_overrides(cfg, n_trials=9, study_name="other", seed=3, timeout=60.0,
                                trial_timeout=30.0, force=True)
    assert cfg.search.n_trials == 9 and cfg.search.seed == 3
    assert cfg.search.timeout == 60.0 and cfg.search.trial_timeout == 30.0
    assert cfg.study_name == "other"
    assert cfg.storage == "sqlite:///results/other.db"
    assert cfg.output == "results/other/tuned.yaml"
    assert cfg.force


def test_explicit_paths_survive_a_new_study_name(write_config):
    body = GOOD + "study:\n  storage: sqlite:///db/x.db\noutput: out/t.yaml\n"
    cfg = config.with_overrides(config.load(write_config(body)), study_name="other")
    assert cfg.storage == "sqlite:///db/x.db" and cfg.output == "out/t.yaml"


def test_space_section_is_flattened_to_knob_names(write_config):
    body = GOOD + textwrap.dedent("""\
        space:
          intra_op_parallelism_threads: [1, 2]
          inter_op_parallelism_threads: 2
          tf_data:
            private_threadpool_size: default
          env:
            TF_ENABLE_ONEDNN_OPTS: ["0", "1"]
        """)
    cfg = config.load(write_config(body))
    assert cfg.space == {"intra_op_parallelism_threads": [1, 2], "inter_op_parallelism_threads": 2,
                         "tf_data.private_threadpool_size": None,
                         "env.TF_ENABLE_ONEDNN_OPTS": ["0", "1"]}


def test_module_builder_spec_is_accepted(write_config):
    cfg = config.load(write_config(GOOD.replace("wl.py:build_model", "mypkg.models:build")))
    assert cfg.workload.model == "mypkg.models:build"


def test_config_error_is_a_tuner_error():
    with pytest.raises(ConfigError):
        config.parse({"workload": {"mode": "predict"}}, Path("x.yaml"))


# -- declared knobs, tf.data options and the objective ------------------------------------------


def test_declared_knobs_parse_in_order(write_config):
    cfg = config.load(write_config(GOOD + "knobs:\n  map_parallelism: [1, 2, 4, autotune]\n"
                                          "  prefetch: [1, 2, autotune]\n"
                                          "  mode: [a, null, 0.5, true]\n"))
    assert cfg.knobs == {"map_parallelism": [1, 2, 4, "autotune"], "prefetch": [1, 2, "autotune"],
                         "mode": ["a", None, 0.5, True]}
    assert config.load(write_config(GOOD)).knobs == {}


@pytest.mark.parametrize("body,needles", [
    ("knobs:\n  map-parallelism: [1, 2]\n", ["knobs: 'map-parallelism' is not a valid knob name",
                                            "Python identifier"]),
    ("knobs:\n  class: [1, 2]\n", ["'class' is not a valid knob name"]),
    ("knobs:\n  1: [1, 2]\n", ["1 is not a valid knob name"]),
    ("knobs:\n  prefetch: []\n", ["knobs.prefetch: empty list"]),
    ("knobs:\n  prefetch: 2\n", ["knobs.prefetch: expected a list of candidate values, got 2"]),
    ("knobs:\n  prefetch: [1, [2]]\n", ["knobs.prefetch: [2] is not allowed", "autotune"]),
    ("knobs:\n  prefetch: [1, 1]\n", ["knobs.prefetch: 1 is listed twice"]),
    ("knobs: [prefetch]\n", ["knobs: expected a mapping of knob names"]),
    ("knobs: {}\n", ["knobs: expected a mapping of knob names"]),
    ("space:\n  knobs:\n    prefetch: [1]\n",
     ["space.knobs: declared knobs are not narrowed here"]),
    ("space:\n  tf_data:\n    autotune:\n      enable: [false]\n",
     ["space.tf_data.autotune.enable: unknown knob", "tf_data.autotune.enabled"]),
    ("space:\n  tf_data:\n    autotune:\n      autotune_algorithm: FASTEST\n",
     ["'FASTEST' is not a valid value for tf_data.autotune.autotune_algorithm", "HILL_CLIMB"]),
    ("space:\n  tf_data:\n    optimization:\n      map_parallelization: [maybe]\n",
     ["'maybe' is not a valid value for tf_data.optimization.map_parallelization"]),
    ("space:\n  tf_data:\n    autotune: [1]\n", ["space.tf_data.autotune: unknown knob"]),
])
def test_knob_config_errors_are_one_line_exit_2(write_config, capsys, body, needles):
    search_error(capsys, write_config(GOOD + body), *needles)
    assert not Path("results").exists()


def test_tf_data_options_nest_in_the_space_section(write_config):
    cfg = config.load(write_config(GOOD + textwrap.dedent("""\
        space:
          tf_data:
            private_threadpool_size: 2
            autotune: {enabled: [true, false], cpu_budget: [1, 2], autotune_algorithm: default}
            optimization.parallel_batch: false
        """)))
    assert cfg.space == {"tf_data.private_threadpool_size": 2,
                         "tf_data.autotune.enabled": [True, False],
                         "tf_data.autotune.cpu_budget": [1, 2],
                         "tf_data.autotune.autotune_algorithm": None,
                         "tf_data.optimization.parallel_batch": False}


@pytest.mark.parametrize("objective,needle", [
    ("objective: fastest\n", "objective: 'fastest' is not allowed; allowed: throughput, "
                             "latency_p50, latency_p95"),
    ("objective: {metric: latency_p95, latency_budget_ms: 20}\n",
     "a latency budget goes with metric 'throughput'"),
    ("objective: {metric: throughput, latency_budget_ms: -1}\n",
     "objective.latency_budget_ms: expected milliseconds (a number > 0), got -1"),
    ("objective: {metric: throughput, budget: 3}\n", "objective.budget: unknown key"),
])
def test_bad_objectives_are_one_line_config_errors(write_config, capsys, objective, needle):
    path = write_config()
    path.write_text(path.read_text() + objective)
    assert cli.main(["search", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
