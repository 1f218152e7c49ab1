"""Tuning the input pipeline, fast: tf.data option knobs and declared knobs in the config, the
space, the worker's builder check, the study (with the fake worker) and the tuned file."""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import optuna
import pytest
import yaml

from tuner import cli, compare, config, knobs, launch, results, search, settings, space, workload
from tuner.apply import Applied
from tuner.errors import ConfigError
from tuner.host import Machine
from tuner.tunedfile import check_settings, read

GOOD = """\
workload:
  model: wl.py:build_model
  data: wl.py:build_data
  mode: predict
"""

ALL_OPTIONS = space.Pipeline(options=tuple(k.name for k in knobs.TF_DATA if k.optional),
                             algorithms=knobs.AUTOTUNE_ALGORITHMS)


def machine(cpus: int = 2) -> Machine:
    return Machine(visible_cpus=cpus, affinity=tuple(range(cpus)), cpu_quota=None,
                   usable_cpus=cpus, physical_cores=cpus, sockets=1, numa_nodes=1,
                   cpu_model="test", arch="x86_64", hostname="h", python="3", memory_bytes=None,
                   tf_version="2.21.0", onednn_default=True)


def assert_one_line_error(capsys, path, *needles):
    code = cli.main(["search", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -- the config ----------------------------------------------------------------------------------

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
    assert_one_line_error(capsys, write_config(GOOD + body), *needles)
    assert not __import__("pathlib").Path("results").exists()


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


# -- the space -----------------------------------------------------------------------------------

def test_optional_tf_data_options_are_hidden_when_tensorflow_lacks_them():
    s = space.build_space(machine(), {}, pipeline=space.Pipeline(options=()))
    assert not any(k.name in s.searched for k in knobs.TF_DATA if k.optional)
    unknown = space.build_space(machine(), {})  # nothing reported: not searched either
    assert unknown.searched.keys() == s.searched.keys()


def test_default_candidates_follow_the_pipeline():
    m = machine()
    every = space.build_space(m, {}, pipeline=ALL_OPTIONS)  # pipeline unknown: all may apply
    for name in ("tf_data.autotune.enabled", "tf_data.optimization.map_parallelization",
                 "tf_data.optimization.inject_prefetch", "tf_data.optimization.parallel_batch"):
        assert every.searched[name] == [None, False]
    for name in ("tf_data.autotune.cpu_budget", "tf_data.autotune.ram_budget",
                 "tf_data.autotune.autotune_algorithm", "tf_data.autotune.min_parallelism"):
        assert every.fixed[name] is None  # only when the config lists them
    ended = space.build_space(m, {}, pipeline=space.Pipeline(
        options=ALL_OPTIONS.options, ops=("TensorSlice", "ParallelMap", "Batch", "Prefetch")))
    assert "tf_data.autotune.enabled" in ended.searched
    assert "tf_data.optimization.parallel_batch" in ended.searched
    assert "tf_data.optimization.map_parallelization" not in ended.searched  # no sequential map
    assert "tf_data.optimization.inject_prefetch" not in ended.searched      # ends in a prefetch
    sequential = space.build_space(m, {}, pipeline=space.Pipeline(
        options=ALL_OPTIONS.options, ops=("Range", "Map")))
    assert "tf_data.optimization.map_parallelization" in sequential.searched
    assert "tf_data.optimization.inject_prefetch" in sequential.searched
    assert "tf_data.optimization.parallel_batch" not in sequential.searched


def test_listed_options_are_checked_against_the_installed_tensorflow():
    m = machine()
    s = space.build_space(m, {"tf_data.autotune.cpu_budget": [1, 2],
                              "tf_data.autotune.autotune_algorithm": ["HILL_CLIMB"]},
                          pipeline=ALL_OPTIONS)
    assert s.searched["tf_data.autotune.cpu_budget"] == [None, 1, 2]
    assert s.searched["tf_data.autotune.autotune_algorithm"] == [None, "HILL_CLIMB"]
    with pytest.raises(ConfigError, match=r"space.tf_data.autotune.min_parallelism: the installed "
                                          r"TensorFlow \(2.21.0\) has no tf.data.Options\(\)"
                                          r".autotune.min_parallelism; remove it"):
        space.build_space(m, {"tf_data.autotune.min_parallelism": [2]},
                          pipeline=space.Pipeline(options=("tf_data.autotune.enabled",)))
    with pytest.raises(ConfigError, match="'STAGE_BASED' is not an autotune algorithm of the "
                                          "installed TensorFlow; allowed: DEFAULT, HILL_CLIMB"):
        space.build_space(m, {"tf_data.autotune.autotune_algorithm": "STAGE_BASED"},
                          pipeline=space.Pipeline(options=ALL_OPTIONS.options,
                                                  algorithms=("DEFAULT", "HILL_CLIMB")))


def test_declared_knobs_are_searched_with_their_baseline_in():
    knobs = {"map_parallelism": [2, 4, "autotune"], "prefetch": [1, "autotune"],
             "cycle_length": [3]}
    s = space.build_space(machine(), {}, knobs=knobs, pipeline=space.Pipeline(
        knobs={"map_parallelism": 1, "prefetch": "autotune", "cycle_length": 3}))
    # the builder's default joins the listed values (the baseline is a point of the space)
    assert s.searched["knobs.map_parallelism"] == [2, 4, "autotune", 1]
    assert s.searched["knobs.prefetch"] == [1, "autotune"]
    assert s.fixed["knobs.cycle_length"] == 3
    assert s.baseline()["knobs.map_parallelism"] == 1
    assert s.expert(machine())["knobs.prefetch"] == "autotune"
    assert s.expert(machine())["intra_op_parallelism_threads"] == 2
    # no default reported: the first listed value is the baseline
    assert space.build_space(machine(), {}, knobs=knobs).baseline()["knobs.map_parallelism"] == 2
    # 1 and True are different values for a builder
    flags = space.build_space(machine(), {}, knobs={"flag": [1]},
                              pipeline=space.Pipeline(knobs={"flag": True}))
    assert flags.searched["knobs.flag"] == [1, True]


def test_tuned_file_layout_round_trips():
    flat = {**space.default_settings(), "tf_data.private_threadpool_size": 2,
            "tf_data.autotune.enabled": False, "tf_data.autotune.autotune_algorithm": "HILL_CLIMB",
            "tf_data.optimization.inject_prefetch": False,
            "knobs.map_parallelism": "autotune", "knobs.prefetch": 2}
    nested = settings.nest(flat)
    assert nested["tf_data"] == {"private_threadpool_size": 2, "max_intra_op_parallelism": None,
                                 "autotune": {"enabled": False, "autotune_algorithm": "HILL_CLIMB"},
                                 "optimization": {"inject_prefetch": False}}
    assert nested["knobs"] == {"map_parallelism": "autotune", "prefetch": 2}
    assert settings.flatten(nested) == flat
    # files without the new parts read as before
    plain = settings.nest(space.default_settings())
    assert "knobs" not in plain and set(plain["tf_data"]) == {"private_threadpool_size",
                                                              "max_intra_op_parallelism"}
    assert "map_parallelism=autotune prefetch=2" in settings.short(flat)
    assert "data.autotune=false" in settings.short(flat)


def test_tf_data_options_set_exactly_the_knobs_given():
    class Holder:
        def __init__(self, *names):
            for name in names:
                setattr(self, name, None)

    def options():
        return SimpleNamespace(threading=Holder("private_threadpool_size",
                                                "max_intra_op_parallelism"),
                               autotune=Holder("enabled", "autotune_algorithm"),
                               experimental_optimization=Holder("map_parallelization"))

    algorithms = SimpleNamespace(__members__={"HILL_CLIMB": "enum-hill-climb"},
                                 __getitem__=None)
    fake_tf = SimpleNamespace(data=SimpleNamespace(
        Options=options, experimental=SimpleNamespace(AutotuneAlgorithm=_Enum(algorithms))))
    built, missing = settings.dataset_options(fake_tf, {
        "tf_data.private_threadpool_size": 3, "tf_data.autotune.enabled": False,
        "tf_data.autotune.autotune_algorithm": "HILL_CLIMB",
        "tf_data.optimization.map_parallelization": None,
        "tf_data.autotune.min_parallelism": 2})
    assert built.threading.private_threadpool_size == 3
    assert built.autotune.enabled is False
    assert built.autotune.autotune_algorithm == "enum-hill-climb"
    assert built.experimental_optimization.map_parallelization is None
    assert missing == ["autotune.min_parallelism"]


class _Enum:
    def __init__(self, ns):
        self.__members__ = ns.__members__

    def __getitem__(self, name):
        return self.__members__[name]


# -- the worker's builder check (no TensorFlow needed) ---------------------------------------------

def _plan(declared, **builders):
    funcs = {role: (func, f"wl.py:{func.__name__}") for role, func in builders.items()}
    return workload.KnobPlan(funcs, list(declared))


def test_each_knob_goes_to_every_builder_that_accepts_it():
    def build_data(map_parallelism=1, prefetch=None):
        pass

    def build_model(**kwargs):
        pass

    def build_other(prefetch=8):
        pass

    plan = _plan(["map_parallelism", "prefetch"], data=build_data, model=build_model)
    assert plan.accepts == {"map_parallelism": ["data", "model"], "prefetch": ["data", "model"]}
    info = plan.baseline({"map_parallelism": [2, "autotune"], "prefetch": [1, 2]})
    assert info["map_parallelism"] == {"builders": ["data", "model"], "baseline": 1,
                                       "source": "builder default"}
    assert info["prefetch"]["baseline"] is None
    tf = SimpleNamespace(data=SimpleNamespace(AUTOTUNE=-1))
    assert plan.kwargs("data", {"map_parallelism": "autotune", "prefetch": 2}, tf) == \
        {"map_parallelism": -1, "prefetch": 2}
    only = _plan(["prefetch"], data=build_other, model=lambda: None)
    assert only.accepts == {"prefetch": ["data"]}
    assert only.kwargs("model", {"prefetch": 2}, tf) == {}


def test_knob_baselines_without_a_usable_default_take_the_first_candidate():
    def build_data(cycle_length, prefetch=-1, shape=(1, 2)):
        pass

    plan = _plan(["cycle_length", "prefetch", "shape"], data=build_data)
    info = plan.baseline({"cycle_length": [4, 2], "prefetch": [1, "autotune"], "shape": ["a"]})
    assert info["cycle_length"] == {"builders": ["data"], "baseline": 4,
                                    "source": "first candidate"}
    assert info["prefetch"]["baseline"] == "autotune"   # tf.data.AUTOTUNE written as a default
    assert info["shape"]["baseline"] == "a"             # a tuple cannot be a knob value


def test_a_knob_no_builder_accepts_is_an_error_naming_both():
    def build_data(prefetch=1):
        pass

    def build_model():
        pass

    with pytest.raises(workload.WorkloadProblem) as caught:
        _plan(["cycle_length"], data=build_data, model=build_model)
    assert str(caught.value).startswith(
        "knobs.cycle_length: declared, but wl.py:build_data nor wl.py:build_model accepts no "
        "argument 'cycle_length'")


def test_a_required_builder_argument_must_be_a_declared_knob():
    def build_data(batch_size):
        pass

    with pytest.raises(workload.WorkloadProblem, match="workload.data: wl.py:build_data has a "
                                                     "required argument 'batch_size' that is not "
                                                     "a declared knob"):
        _plan([], data=build_data)
    assert _plan(["batch_size"], data=build_data).accepts == {"batch_size": ["data"]}


# -- the study, with the fake worker -------------------------------------------------------------

KNOB_STUDY = """\
workload:
  model: wl.py:build_model
  data: wl.py:build_data
  mode: predict
search:
  n_trials: {n}
  trial_timeout: 20
  sampler: {sampler}
measure:
  warmup_seconds: 0
  window_seconds: 0.01
  windows: 3
validate:
  candidates: 2
  screen_rounds: 1
  rounds: 5
space:
  intra_op_parallelism_threads: default
  inter_op_parallelism_threads: default
  tf_data: {{private_threadpool_size: default, max_intra_op_parallelism: default}}
  env: {{TF_ENABLE_ONEDNN_OPTS: default}}
  allocator: default
  instances: default
  cpus: default
knobs:
  map_parallelism: [1, 2, 4, autotune]
  prefetch: [1, autotune]
"""


def run_search(path):
    lines: list[str] = []
    outcome = search.run(config.load(path), lines.append)
    outcome.lines = lines
    return outcome


def test_declared_knobs_reach_the_trials_and_the_tuned_file(fake_worker, write_config,
                                                            monkeypatch):
    monkeypatch.setenv("FAKE_KNOB_DEFAULTS", json.dumps({"map_parallelism": 1}))
    path = write_config(KNOB_STUDY.format(n=10, sampler="auto"))
    outcome = run_search(path)
    trials = optuna.load_study(study_name="study", storage="sqlite:///results/study.db").trials
    # the baseline is the pipeline as written: the builder's default, or the first candidate
    assert trials[0].user_attrs["role"] == "baseline"
    assert trials[0].user_attrs["knobs"] == {"map_parallelism": 1, "prefetch": 1}
    assert trials[1].user_attrs["knobs"] == {"map_parallelism": 1, "prefetch": 1}  # expert
    # every trial's child received the values Optuna chose for it
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.user_attrs["knobs"] == {"map_parallelism": t.params["knobs.map_parallelism"],
                                             "prefetch": t.params["knobs.prefetch"]}
    assert {t.params["knobs.map_parallelism"] for t in trials} == {1, 2, 4, "autotune"}
    doc = yaml.safe_load(open(outcome.tuned_path))
    assert doc["verdict"] == "tuned"
    assert doc["settings"]["knobs"]["map_parallelism"] == "autotune"   # 1.7x in the fake
    assert doc["result"]["speedup"] == pytest.approx(1.7, rel=0.05)
    assert "  knob map_parallelism: to build_data; baseline 1 (builder default)" in outcome.lines
    winner = next(t for t in trials if t.number == doc["validation"]["winner"]["trial"])
    assert winner.params["knobs.map_parallelism"] == "autotune"
    assert read(outcome.tuned_path).doc["settings"]["knobs"] == {
        "map_parallelism": "autotune", "prefetch": winner.params["knobs.prefetch"]}
    shown = cli.main(["show", outcome.tuned_path])
    assert shown == 0


def test_small_budgets_screen_the_declared_knobs_first(fake_worker, write_config):
    path = write_config(KNOB_STUDY.format(n=10, sampler="tpe"))
    run_search(path)
    trials = optuna.load_study(study_name="study", storage="sqlite:///results/study.db").trials
    screened = [t.params for t in trials if t.user_attrs.get("role") == "screen"]
    # each listed value of each knob once, the others at the baseline (first candidates here)
    assert screened == [{"knobs.map_parallelism": 2, "knobs.prefetch": 1},
                        {"knobs.map_parallelism": 4, "knobs.prefetch": 1},
                        {"knobs.map_parallelism": "autotune", "knobs.prefetch": 1},
                        {"knobs.map_parallelism": 1, "knobs.prefetch": "autotune"}]


def test_defaults_verdict_keeps_the_pipeline_as_written(fake_worker, write_config, monkeypatch):
    monkeypatch.setenv("FAKE_SHAPE", "flat")
    monkeypatch.setenv("FAKE_KNOB_DEFAULTS", json.dumps({"map_parallelism": 4}))
    path = write_config(KNOB_STUDY.format(n=4, sampler="auto").replace(
        "map_parallelism: [1, 2, 4, autotune]", "map_parallelism: [1, 2]"))
    doc = yaml.safe_load(open(run_search(path).tuned_path))
    assert doc["verdict"] == "defaults"
    assert doc["settings"]["knobs"] == {"map_parallelism": 4, "prefetch": 1}
    assert doc["search"]["space"]["searched"]["knobs.map_parallelism"] == [1, 2, 4]


def test_tf_data_options_are_searched_and_written_nested(fake_worker, write_config, monkeypatch):
    monkeypatch.setenv("FAKE_TF_DATA", "all")
    monkeypatch.setenv("FAKE_PIPELINE", "Range,Map,Batch,Prefetch")
    path = write_config(KNOB_STUDY.format(n=6, sampler="auto").split("knobs:")[0].replace(
        "max_intra_op_parallelism: default}",
        "max_intra_op_parallelism: default, autotune: {cpu_budget: [1], enabled: [false]},"
        " optimization: {parallel_batch: default}}"))
    outcome = run_search(path)
    searched = outcome.tuned["search"]["space"]["searched"]
    assert searched == {"tf_data.autotune.enabled": [None, False],
                        "tf_data.autotune.cpu_budget": [None, 1],
                        "tf_data.optimization.map_parallelization": [None, False]}
    trials = optuna.load_study(study_name="study", storage="sqlite:///results/study.db").trials
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            received = t.user_attrs["tf_data_options"]
            budget = "tf_data.autotune.cpu_budget"
            assert received[budget] == t.params[budget]
    best = outcome.tuned["search"]["best_trial"]["settings"]["tf_data"]
    assert set(best) >= {"private_threadpool_size", "max_intra_op_parallelism"}
    check_settings(outcome.tuned["settings"], "t.yaml")


def test_an_option_this_tensorflow_lacks_is_a_config_error(fake_worker, write_config, capsys):
    path = write_config(GOOD + "space:\n  tf_data:\n    autotune:\n      ram_budget: [1000000]\n")
    assert_one_line_error(capsys, path, "space.tf_data.autotune.ram_budget: the installed "
                                        "TensorFlow (fake-1.0) has no "
                                        "tf.data.Options().autotune.ram_budget; remove it")


# -- the tuned file ------------------------------------------------------------------------------

def _doc(**settings):
    base = {"intra_op_parallelism_threads": 0, "inter_op_parallelism_threads": 0,
            "tf_data": {"private_threadpool_size": None, "max_intra_op_parallelism": None},
            "env": {}}
    base.update(settings)
    return {"settings": base}


def test_check_settings_accepts_options_and_knobs_and_old_files():
    check_settings(_doc()["settings"], "t.yaml")
    check_settings(_doc(tf_data={"private_threadpool_size": 2,
                                       "autotune": {"enabled": False, "cpu_budget": 2,
                                                    "autotune_algorithm": "HILL_CLIMB"},
                                       "optimization": {"map_parallelization": True}},
                              knobs={"map_parallelism": "autotune", "prefetch": 2,
                                     "ratio": 0.5, "name": None})["settings"], "t.yaml")


@pytest.mark.parametrize("settings,message", [
    ({"tf_data": {"autotune": {"enabled": "yes"}}},
     "settings.tf_data.autotune.enabled: expected true, false or null, got 'yes'"),
    ({"tf_data": {"autotune": {"cpu_budget": 0}}},
     "settings.tf_data.autotune.cpu_budget: expected an integer >= 1 or null, got 0"),
    ({"tf_data": {"autotune": {"autotune_algorithm": "FAST"}}},
     "settings.tf_data.autotune.autotune_algorithm: expected one of DEFAULT"),
    ({"tf_data": {"autotune": {"budget": 1}}},
     "settings.tf_data.autotune.budget: unknown; allowed: enabled, cpu_budget, ram_budget"),
    ({"tf_data": {"autotune": True}}, "settings.tf_data.autotune: expected a mapping, got True"),
    ({"tf_data": {"optimisation": {}}},
     ("settings.tf_data.optimisation: unknown; allowed: private_threadpool_size, "
     "max_intra_op_parallelism, autotune, optimization")),
    ({"knobs": [1]}, "settings.knobs: expected a mapping"),
    ({"knobs": {"a b": 1}}, "settings.knobs: 'a b' is not a valid knob name"),
    ({"knobs": {"prefetch": [1]}}, "settings.knobs.prefetch: expected a number, a string"),
])
def test_check_settings_names_the_bad_field(settings, message):
    with pytest.raises(ConfigError) as caught:
        check_settings(_doc(**settings)["settings"], "t.yaml")
    assert message in str(caught.value)


def test_applied_knobs_without_autotune_need_no_tensorflow():
    applied = Applied(path="t.yaml", verdict="tuned",
                            settings=_doc(knobs={"prefetch": 2, "cycle_length": 4})["settings"])
    assert applied.knobs == {"prefetch": 2, "cycle_length": 4}
    assert applied.info()["knobs"] == {"prefetch": 2, "cycle_length": 4}
    assert Applied(path="t", verdict="tuned", settings=_doc()["settings"]).knobs == {}


def test_launcher_and_export_note_what_the_environment_cannot_carry():
    doc = _doc(tf_data={"private_threadpool_size": 2, "autotune": {"enabled": False}},
               knobs={"map_parallelism": "autotune"})
    note = launch.tf_data_note(doc)
    assert note.startswith("tf.data settings (private_threadpool_size=2, autotune.enabled=false) "
                           "cannot be set from the environment")
    assert "declared knobs (map_parallelism=autotune) are the job's own arguments: pass " \
           "cfg.knobs[name]" in note
    assert launch.tf_data_note(_doc()) is None


def test_show_and_compare_list_declared_knobs(tmp_path):
    fixture = __import__("pathlib").Path(__file__).parent / "fixtures" / "branchy.yaml"
    doc = yaml.safe_load(fixture.read_text())
    doc["settings"]["knobs"] = {"map_parallelism": "autotune"}
    doc["settings"]["tf_data"]["autotune"] = {"enabled": False}
    path = tmp_path / "knobbed.yaml"
    path.write_text(yaml.safe_dump(doc))
    shown = compare.show_table(results.from_tuned_file(path)).text()
    assert "knobs.map_parallelism" in shown and "autotune" in shown
    assert "tf_data.autotune.enabled" in shown and "(TensorFlow default: null)" in shown
    both = compare.compare_table(compare.compare_results([results.from_tuned_file(fixture),
                                                          results.from_tuned_file(path)])).text()
    assert "* knobs.map_parallelism" in both
