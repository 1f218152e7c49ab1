"""Loading the user's builders: which declared knob reaches which builder, and each knob's
baseline (no TensorFlow needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tuner.child import workload


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


def test_a_model_file_searchs_data_module_is_not_shadowed_by_the_results_folder(tmp_path,
                                                                             monkeypatch):
    # the generated config of `search --model m.keras --data mod:fn` lives in results/<name>:
    # a results folder, not code; a module there must not win over the user's own
    import sys

    from tuner.child import workload

    user, generated = tmp_path / "work", tmp_path / "results" / "m"
    user.mkdir()
    generated.mkdir(parents=True)
    (user / "tuner_t24_data.py").write_text("def fn():\n    return 'user'\n")
    (generated / "tuner_t24_data.py").write_text("def fn():\n    return 'planted'\n")
    monkeypatch.setattr(sys, "path", [str(user), *sys.path])   # python -m: the cwd first
    monkeypatch.delitem(sys.modules, "tuner_t24_data", raising=False)
    fn = workload._load_callable("tuner_t24_data:fn", str(generated), "data", base_first=False)
    assert fn() == "user"
    assert sys.path[0] == str(user) and sys.path[-1] == str(generated)
    monkeypatch.delitem(sys.modules, "tuner_t24_data")
    # a builder config's own folder still comes first (its modules are the user's)
    fn = workload._load_callable("tuner_t24_data:fn", str(generated), "data")
    assert fn() == "planted" and sys.path[0] == str(generated)
