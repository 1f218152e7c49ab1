"""The structured search (``search.sampler: structured``): phases in order, the layout found
first, thread counts relative to the layout, no configuration measured twice except replicates,
ablation of knobs without an effect, and what the study and the tuned file record.

The fake worker's ``layout`` shape is an instances-dominated model: 2 instances are 1.8x, more
intra-op threads than a process has CPUs cost 20%, nothing else matters."""

from __future__ import annotations

import json

import optuna
import pytest
from helpers import DUMMY_WORKLOAD, FAST, run_trials, write_text
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from tuner import config
from tuner.base.host import Machine
from tuner.knobs.space import build_space
from tuner.results import model as results
from tuner.search import pipeline as search
from tuner.search import structured
from tuner.tuned import reader as tunedfile

ORDER = {phase: i for i, phase in enumerate(structured.PHASES)}


def run_structured(directory, monkeypatch):
    monkeypatch.setenv("FAKE_SHAPE", "layout")
    monkeypatch.setenv("FAKE_INSTANCE_GAIN", "1.8")
    # seeded noise: whether a 1% wobble is judged "beyond noise" must not depend on the run
    monkeypatch.setenv("FAKE_SEED_FILE", str(directory / "fake-seed"))
    # the allocator is left out: whether tcmalloc or jemalloc are installed depends on the machine
    path = write_text(directory / "study.yaml",
                      FAST.replace("n_trials: 8", "n_trials: 20\n  sampler: structured")
                      + "space:\n  allocator: default\n")
    cfg = config.load(path)
    lines: list[str] = []
    outcome = search.run(cfg, lines.append)
    return outcome, lines


@pytest.fixture(scope="module")
def _structured_once(tmp_path_factory, fake_search_in):
    """One structured search, shared by the tests that only read what it did."""
    directory = tmp_path_factory.mktemp("structured")
    with fake_search_in(directory) as monkeypatch:
        outcome, lines = run_structured(directory, monkeypatch)
    return directory, outcome, lines


@pytest.fixture
def structured_run(_structured_once, monkeypatch):
    """The shared structured search, from its directory: (outcome, its lines, the study)."""
    directory, outcome, lines = _structured_once
    monkeypatch.chdir(directory)
    study = optuna.load_study(study_name="study",
                              storage=f"sqlite:///{directory}/results/study.db")
    return outcome, lines, study


def test_phases_run_in_order_and_are_recorded(structured_run):
    outcome, lines, study = structured_run
    phases = [t.user_attrs["phase"] for t in study.trials]
    assert phases[:2] == ["reference", "reference"]
    assert phases[2] == "noise"
    screening = [p for p in phases if p in ("noise", "layout", "threads", "data", "tpe")]
    assert screening == sorted(screening, key=ORDER.get)
    assert "layout" in phases and "threads" in phases and "data" in phases
    assert phases.index("layout") < phases.index("threads") < phases.index("data")
    # every trial line names its phase
    trial_lines = [line for line in lines if line.startswith("trial")]
    assert len(trial_lines) == len(study.trials)
    assert any(line.startswith("trial   4 [layout]") for line in trial_lines)
    # the study records the plan and what screening judged
    record = study.user_attrs[structured.STUDY_ATTR]
    assert record["phases"] == list(structured.PHASES)
    assert record["dims"]["layout"] == ["instances"]
    assert record["noise"] > 0
    assert "instances" in record["matter"]
    assert "inter_op_parallelism_threads" not in record["matter"]


def test_the_layout_phase_finds_the_instances_effect(structured_run):
    outcome, lines, study = structured_run
    layout = [t for t in study.trials if t.user_attrs["phase"] == "layout"]
    assert [t.user_attrs["settings"]["instances"] for t in layout] == [2]
    assert layout[0].value > 1.6 * study.trials[0].value
    # threads are screened around the best layout
    threads = [t for t in study.trials if t.user_attrs["phase"] == "threads"]
    assert threads and all(t.user_attrs["settings"]["instances"] == 2 for t in threads)
    doc = outcome.tuned
    assert doc["verdict"] == "tuned"
    assert doc["settings"]["instances"]["count"] == 2
    assert doc["result"]["speedup"] == pytest.approx(1.8, rel=0.05)


def test_thread_candidates_are_relative_to_the_instance_size(structured_run):
    _, _, study = structured_run
    for t in study.trials:
        settings = t.user_attrs["settings"]
        if t.user_attrs.get("role") in ("baseline", "expert"):
            continue
        intra = settings["intra_op_parallelism_threads"]
        inter = settings["inter_op_parallelism_threads"]
        cpus = 1 if settings["instances"] == 2 else 2   # this machine has 2 usable CPUs
        assert intra in (0, 1, max(1, cpus // 2), cpus, 2 * cpus), t.number
        assert inter in (0, 1, max(1, cpus // 2), cpus, 2 * cpus), t.number
        assert not (intra > cpus and inter > cpus), t.number   # intra=2 inter=2 inst=2
    # the study's parameters hold the per-instance choice, the settings the absolute counts
    trial = next(t for t in study.trials if t.user_attrs["phase"] == "threads")
    assert trial.params["intra_op_per_instance"] in structured.THREAD_LABELS


def test_no_configuration_is_measured_twice_except_replicates(structured_run):
    _, _, study = structured_run
    measured: dict[str, int] = {}
    for t in study.trials:
        if "duplicate_of" in t.user_attrs or t.state != TrialState.COMPLETE:
            continue
        key = structured.settings_key(t.user_attrs["settings"])
        if key in measured:
            assert t.user_attrs.get("role") == structured.REPLICATE, t.number
        measured[key] = t.number
    # the baseline was replicated on purpose, for the noise
    base = structured.settings_key(study.trials[0].user_attrs["settings"])
    assert sum(structured.settings_key(t.user_attrs["settings"]) == base
               for t in study.trials if t.state == TrialState.COMPLETE) >= 2


def test_the_tuned_file_says_which_knobs_carry_the_gain(structured_run):
    outcome, _, _ = structured_run
    assert outcome.tuned["result"]["carried_by"] == ["instances"]
    assert outcome.tuned["search"]["sampler"] == "structured"
    # both readers accept the optional field
    tunedfile.read(outcome.tuned_path)
    assert results.from_tuned_file(outcome.tuned_path).speedup > 1


def test_other_samplers_do_not_measure_a_configuration_twice(fake_worker, write_config):
    # the grid holds TensorFlow's defaults, which the baseline trial measured already
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 14") + """\
space:
  intra_op_parallelism_threads: [1, 2, 3]
  inter_op_parallelism_threads: [1, 2]
  tf_data: {private_threadpool_size: default, max_intra_op_parallelism: default}
  env: {TF_ENABLE_ONEDNN_OPTS: default, TF_XLA_FLAGS: default}
  allocator: default
  instances: default
""")
    lines = run_trials(path)  # the study stage alone: which trials run is its business
    study = optuna.load_study(study_name="study", storage="sqlite:///results/study.db")
    duplicates = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert duplicates
    keys = [json.dumps(t.user_attrs["settings"], sort_keys=True) for t in study.trials
            if "duplicate_of" not in t.user_attrs]
    assert len(keys) == len(set(keys))
    for t in duplicates:
        assert t.value == study.trials[t.user_attrs["duplicate_of"]].value
        assert any(line.startswith(f"trial {t.number:>3}") and "not measured" in line
                   for line in lines)


# -- the plan on a simulated 16-CPU machine, without processes --------------------------------

def machine16() -> Machine:
    return Machine(visible_cpus=16, affinity=tuple(range(16)), cpu_quota=None, usable_cpus=16,
                   physical_cores=16, sockets=1, numa_nodes=1, cpu_model="sim", arch="x86_64",
                   hostname="sim", python="3", memory_bytes=None, tf_version="fake",
                   onednn_default=True)


def engine16() -> structured.Engine:
    machine = machine16()
    space = build_space(machine, {"allocator": "default"})
    return structured.Engine(structured.StructuredSpace(space, machine), replicates=1)


def add(study, engine, params, value, number_phase, role=None, spread=0.01):
    settings = engine.s.settings(params)
    study.add_trial(create_trial(
        params=params, value=value,
        distributions={n: CategoricalDistribution(v) for n, v in engine.s.params.items()},
        user_attrs={"settings": settings, "phase": number_phase,
                    "throughput": {"rel_spread": spread},
                    **({"role": role} if role else {})}))


def seen(study, engine):
    return engine.seen(study.get_trials(deepcopy=False), lambda attrs: True)


def test_threads_per_instance_on_16_cpus():
    engine = engine16()
    base = engine.base
    for count, cpus in ((1, 16), (4, 4), (16, 1)):
        counts = {engine.s.settings({**base, "instances": count,
                                     "intra_op_per_instance": label})
                  ["intra_op_parallelism_threads"] for label in structured.THREAD_LABELS}
        assert counts == {0, 1, max(1, cpus // 2), cpus, 2 * cpus}
    # an absolute count maps back to its per-instance choice
    point = engine.s.settings({**base, "instances": 4, "intra_op_per_instance": "c"})
    assert engine.s.params_of(point)["intra_op_per_instance"] == "c"


def test_ablation_reverts_a_knob_without_effect_and_prefers_fewer_changes():
    engine = engine16()
    study = optuna.create_study(direction="maximize")
    base = engine.base
    add(study, engine, base, 1000.0, "reference", "baseline")
    add(study, engine, base, 1010.0, "noise", structured.REPLICATE)
    # the leader changed two knobs; only the instances carry its gain
    leader = {**base, "instances": 16, "tf_data.private_threadpool_size": 4}
    add(study, engine, leader, 4300.0, "tpe")
    step = engine.next_step(seen(study, engine), remaining=3)
    assert step.phase == "ablation"
    reverted = {**leader, "tf_data.private_threadpool_size": None}
    pool_revert = next(s for s in engine.ablation(seen(study, engine), 0.03)
                       if s.params == reverted)
    assert pool_revert.role is None
    add(study, engine, reverted, 4290.0, "ablation")           # within noise: no effect
    add(study, engine, {**leader, "instances": 1}, 1005.0, "ablation")   # the gain is here
    history = seen(study, engine)
    pick = engine.pick(history, engine.noise(history))
    assert pick.params == reverted
    assert engine.judged(history)["carried_by"] == ["instances"]
    # the new leader is replicated once, on purpose
    last = engine.ablation(history, engine.noise(history))
    assert [s.role for s in last] == [structured.REPLICATE]


def test_the_noise_comes_from_the_baselines_spread_across_processes():
    engine = engine16()
    study = optuna.create_study(direction="maximize")
    add(study, engine, engine.base, 1000.0, "reference", "baseline", spread=0.0)
    assert engine.next_step(seen(study, engine)).phase == "noise"
    add(study, engine, engine.base, 1100.0, "noise", structured.REPLICATE, spread=0.0)
    noise = engine.noise(seen(study, engine))
    assert noise == pytest.approx(2 * 2 ** 0.5 * (2 * (50 / 1050) ** 2) ** 0.5)
    # with that much noise a 5% gain is not beyond it: the baseline stays the leader
    add(study, engine, {**engine.base, "instances": 2}, 1050.0, "layout")
    history = seen(study, engine)
    assert engine.pick(history, engine.noise(history)).params == engine.base
    assert engine.next_step(history).phase == "layout"


def test_threads_are_also_screened_around_the_fastest_multi_instance_layout():
    """A layout within noise of one process can win with its own thread counts: when the
    leader runs one process, the threads phase screens from both, in turn."""
    engine = engine16()
    study = optuna.create_study(direction="maximize")
    base = engine.base
    add(study, engine, base, 1000.0, "reference", "baseline")
    add(study, engine, base, 1200.0, "noise", structured.REPLICATE)   # noisy: ~40%
    for count, value in ((2, 1010.0), (4, 1150.0), (8, 990.0), (16, 1020.0)):
        add(study, engine, {**base, "instances": count}, value, "layout")
    history = seen(study, engine)
    noise = engine.noise(history)
    assert engine.pick(history, noise).params == base      # nothing beyond noise
    anchors = engine.anchors("threads", history, noise)
    assert [a["instances"] for a in anchors] == [1, 4]
    # the first two threads trials: one from each anchor
    tried = {s.key for s in history}
    first = engine.screen("threads", history, tried, noise)
    tried.add(engine.s.key(first.params))
    second = engine.screen("threads", history, tried, noise)
    assert {first.params["instances"], second.params["instances"]} == {1, 4}
    # no second anchor when the leader already runs several instances
    quiet = optuna.create_study(direction="maximize")
    add(quiet, engine, base, 1000.0, "reference", "baseline")
    add(quiet, engine, base, 1010.0, "noise", structured.REPLICATE)
    add(quiet, engine, {**base, "instances": 8}, 1900.0, "layout")
    add(quiet, engine, {**base, "instances": 16}, 1700.0, "layout")
    history = seen(quiet, engine)
    assert [a["instances"] for a in engine.anchors("threads", history, engine.noise(history))
            ] == [8]


def test_auto_is_the_structured_search_when_the_space_exceeds_the_budget(tmp_path):
    from tuner.search import sampling

    machine = machine16()
    space = build_space(machine, {"allocator": "default"})
    write_text(tmp_path / "wl.py", DUMMY_WORKLOAD)
    cfg = config.load(write_text(tmp_path / "c.yaml", FAST.replace(
        "n_trials: 8", "n_trials: 24")))
    assert cfg.search.sampler == "auto"
    sampler, kind = sampling.sampler(cfg, space, machine=machine)
    assert kind == "structured" and isinstance(sampler, structured.StructuredSampler)
    small = build_space(machine, {"intra_op_parallelism_threads": [1, 2],
                                  **{name: "default" for name in (
                                      "inter_op_parallelism_threads",
                                      "tf_data.private_threadpool_size",
                                      "tf_data.max_intra_op_parallelism",
                                      "env.TF_ENABLE_ONEDNN_OPTS", "env.TF_XLA_FLAGS", "allocator",
                                      "instances")}})
    assert sampling.sampler(cfg, small, machine=machine)[1] == "grid"
    assert sampling.sampler(cfg, space)[1] == "tpe"    # no machine to lay out: TPE


def test_declared_knobs_are_screened_right_after_the_layout():
    """The builders' own arguments are the levers the user named: a short search reaches them
    before the threads (a sequential map's parallelism is worth 2x)."""
    machine = machine16()
    space = build_space(machine, {"allocator": "default"},
                        knobs={"map_parallelism": [1, 2, 4, "autotune"]})
    engine = structured.Engine(structured.StructuredSpace(space, machine), replicates=1)
    assert engine.dims["knobs"] == ["knobs.map_parallelism"]
    assert "knobs.map_parallelism" not in engine.dims["data"]
    study = optuna.create_study(direction="maximize")
    base = engine.base
    add(study, engine, base, 1000.0, "reference", "baseline")
    add(study, engine, base, 1010.0, "noise", structured.REPLICATE)
    phases = []
    for value in range(40):
        step = engine.next_step(seen(study, engine))
        phases.append(step.phase)
        if step.phase == "threads":
            break
        add(study, engine, step.params, 1000.0 + value, step.phase)
    knob_steps = [i for i, p in enumerate(phases) if p == "knobs"]
    assert len(knob_steps) == 3                      # 2, 4 and autotune, from the baseline's 1
    assert phases.index("knobs") > phases.index("layout")
    assert max(knob_steps) < phases.index("threads")
