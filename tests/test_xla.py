"""XLA auto-clustering, the compute lever (issue #23), without TensorFlow: the knob and its only
values, the tuned file's reader, the child's environment, every export format, the warm-up
that waits for compilation, the first steps' cost in the result and ``show``, the structured
search's compute phase (values alone, then combined) and its ablation, and a trial XLA cannot
compile (the fake worker reports it as the real one does). Real TensorFlow: test_e2e_xla.py."""

from __future__ import annotations

import subprocess

import optuna
import pytest
import yaml
from helpers import FAST, load_study, run_search
from test_meter import FakeClock, FakeWork
from test_production import make_tuned
from test_structured import add, machine16, seen

from tuner import cli, knobs
from tuner.base.yamlsafe import shown
from tuner.child import meter
from tuner.errors import ConfigError
from tuner.knobs import settings
from tuner.knobs.space import Pipeline, build_space
from tuner.results import compare
from tuner.results import model as results
from tuner.search import structured
from tuner.tuned import reader as tunedfile

XLA = knobs.XLA
LEVEL1, LEVEL2 = knobs.XLA_VALUES


# -- the knob -------------------------------------------------------------------------------------

def test_the_knob_owns_only_its_enumerated_values():
    assert knobs.KNOBS["env.TF_XLA_FLAGS"] is XLA
    assert XLA.compute and not XLA.changes_numbers and XLA.variable == "TF_XLA_FLAGS"
    assert XLA.candidates(machine16()) == [None, "--tf_xla_auto_jit=1 --tf_xla_cpu_global_jit",
                                           "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"]
    pipeline = Pipeline()
    assert XLA.searched_by_default(machine16(), "predict", pipeline)
    assert XLA.searched_by_default(machine16(), "train", pipeline)
    assert not XLA.searched_by_default(machine16(), "data", pipeline)
    for bad in ("--tf_xla_auto_jit=2", "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit "
                "--xla_dump_to=/tmp", "2", ""):
        with pytest.raises(ConfigError, match="env.TF_XLA_FLAGS"):
            XLA.check(bad, "space.env.TF_XLA_FLAGS")
    assert XLA.check("default", "x") is None
    assert XLA.shown(LEVEL2) == "auto_jit=2" and XLA.shown(None) == "-"
    assert XLA.on(LEVEL1) and not XLA.on(None) and not XLA.on("--tf_xla_auto_jit=2")


@pytest.mark.parametrize("value", [
    "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit --tf_xla_persistent_cache_directory=/x",
    "--tf_xla_auto_jit=2", "--tf_xla_cpu_global_jit --tf_xla_auto_jit=2", "on"])
def test_the_tuned_file_reader_refuses_any_other_text(tmp_path, capsys, value):
    path = make_tuned(tmp_path, env={"TF_XLA_FLAGS": value})
    with pytest.raises(ConfigError) as caught:
        tunedfile.read(path)
    message = str(caught.value)
    # the bad value echoed, bounded for the message (yamlsafe.shown)
    assert "settings.env.TF_XLA_FLAGS" in message and shown(value) in message
    assert LEVEL2 in message and "\n" not in message
    # the commands that act on a file say it in one line
    assert cli.main(["export", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "TF_XLA_FLAGS" in err
    for good in knobs.XLA_VALUES:
        assert tunedfile.read(make_tuned(tmp_path, env={"TF_XLA_FLAGS": good})).settings[
            "env"]["TF_XLA_FLAGS"] == good


def test_the_parent_environment_s_own_flags_never_reach_a_measured_child():
    parent = {"TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit", "PATH": "/bin"}
    assert "TF_XLA_FLAGS" in settings.CONTROLLED_ENV
    baseline = settings.child_environment(knobs.default_settings(), parent)
    assert "TF_XLA_FLAGS" not in baseline and baseline["PATH"] == "/bin"
    on = settings.child_environment({**knobs.default_settings(), XLA.name: LEVEL1}, parent)
    assert on["TF_XLA_FLAGS"] == LEVEL1
    assert settings.compiles({XLA.name: LEVEL1}) and not settings.compiles({})


def test_the_file_layout_round_trips():
    flat = {**knobs.default_settings(), XLA.name: LEVEL2}
    tree = settings.nest(flat)
    assert tree["env"] == {"TF_XLA_FLAGS": LEVEL2}
    assert settings.flatten(tree)[XLA.name] == LEVEL2
    assert settings.environment(tree)["TF_XLA_FLAGS"] == LEVEL2
    assert any("TF Serving needs --xla_cpu_compilation_enabled=true" in n
               for n in settings.notes(tree))
    assert settings.nest(knobs.default_settings()).get("env") == {}


# -- production: every export format --------------------------------------------------------------

def test_every_export_format_carries_it(tmp_path, capsys):
    path = make_tuned(tmp_path, env={"TF_XLA_FLAGS": LEVEL2})
    out = {}
    for fmt in cli_formats():
        assert cli.main(["export", str(path), "--format", fmt]) == 0
        out[fmt] = capsys.readouterr().out
    script = out["shell"] + 'printf %s "$TF_XLA_FLAGS"\n'
    assert subprocess.run(["bash", "-c", script], capture_output=True,
                          text=True).stdout == LEVEL2
    dotenv = out["dotenv"] + 'printf %s "$TF_XLA_FLAGS"\n'
    assert subprocess.run(["bash", "-c", "set -a\n" + dotenv], capture_output=True,
                          text=True).stdout == LEVEL2
    assert f"-e 'TF_XLA_FLAGS={LEVEL2}'" in out["docker"]
    env = {e["name"]: e["value"] for e in yaml.safe_load(out["k8s"])["env"]}
    assert env["TF_XLA_FLAGS"] == LEVEL2
    serving = out["tf-serving"]
    assert f"export TF_XLA_FLAGS='{LEVEL2}'" in serving
    exec_line = next(line for line in serving.splitlines() if line.startswith("exec "))
    assert "--xla_cpu_compilation_enabled=true" in exec_line
    # without XLA the server is not told to compile
    plain = make_tuned(tmp_path, env={}, name="plain.yaml")
    assert cli.main(["export", str(plain), "--format", "tf-serving"]) == 0
    assert "xla_cpu_compilation" not in capsys.readouterr().out


def cli_formats() -> tuple[str, ...]:
    from tuner.production import launch

    return launch.FORMATS


# -- the warm-up waits for the compilation --------------------------------------------------------

def compiling_steps(n: int) -> float:
    """Steps 0 and 1 as TensorFlow's lazy compilation has them (a cluster compiles once it has
    run before), step 2 compiles for 1.5 s, then 10 ms steps."""
    return {0: 0.02, 1: 0.02, 2: 1.5}.get(n, 0.01)


def test_the_warm_up_waits_until_the_rate_settles_after_compilation():
    clock = FakeClock()
    work = FakeWork(clock, step=compiling_steps)
    steps, rates = meter.warm_up(work, seconds=0.5, min_steps=3, start=0.0, clock=clock,
                                 compiles=True)
    # past the compilation (which alone overran the 0.5 s limit): the limit counts again
    # from its end, and what follows it is the steady rate
    assert clock.t >= 1.54 + meter.WARMUP_CHUNK_SECONDS
    assert steps >= meter.XLA_MIN_STEPS
    assert rates[-1] == pytest.approx(rates[-2], rel=meter.WARMUP_STABLE)
    assert rates[-1] == pytest.approx(32 / 0.01, rel=0.01)
    # without XLA the limit counts from the start: the warm-up ends inside the compilation
    clock = FakeClock()
    work = FakeWork(clock, step=compiling_steps)
    meter.warm_up(work, seconds=0.5, min_steps=3, start=0.0, clock=clock)
    assert clock.t == pytest.approx(1.54)


def test_a_compilation_in_the_very_first_warm_up_step_is_recognised_once_steps_get_fast():
    clock = FakeClock()
    work = FakeWork(clock, step=lambda n: 2.0 if n == 0 else 0.01)   # nothing before it to compare
    steps, rates = meter.warm_up(work, seconds=0.5, min_steps=3, start=0.0, clock=clock,
                                 compiles=True)
    assert clock.t >= 2.0 + meter.WARMUP_CHUNK_SECONDS
    assert rates[-1] == pytest.approx(32 / 0.01, rel=0.01)
    clock = FakeClock()
    work = FakeWork(clock, step=lambda n: 2.0 if n == 0 else 0.01)
    meter.warm_up(work, seconds=0.5, min_steps=3, start=0.0, clock=clock)
    assert clock.t == pytest.approx(2.02)   # without XLA: over at the limit (after 3 steps)


def test_a_model_that_keeps_compiling_stops_at_the_hard_limit():
    clock = FakeClock()
    work = FakeWork(clock, step=lambda n: 0.01 if n % 2 else 5.0)   # recompiles every other step
    meter.warm_up(work, seconds=0.5, min_steps=3, start=0.0, clock=clock, compiles=True)
    assert meter.COMPILE_LIMIT_SECONDS <= clock.t <= meter.COMPILE_LIMIT_SECONDS + 10.5


def test_the_first_steps_cost_is_reported():
    clock = FakeClock()
    work = FakeWork(clock, step=lambda n: 1.0 if n == 0 else compiling_steps(n - 1))
    cfg = {"warmup_seconds": 0.5, "min_warmup_steps": 3, "window_seconds": 0.5, "windows": 2}
    timings: dict[str, float] = {}
    out = meter.measure(work, cfg, usable=1, affinity=[0], progress=_Quiet(), timings=timings,
                        clock=clock, compiles=True)
    first = out["first_steps"]
    assert first["seconds"] == pytest.approx(timings["warmup"], abs=1e-4)
    # tracing (1 s), two 20 ms steps and the compilation (1.5 s), beyond four steady 10 ms ones
    assert first["extra_seconds"] == pytest.approx(1.0 + 0.02 + 0.02 + 1.5 - 4 * 0.01, abs=1e-3)
    assert first["steps"] == out["warmup_steps"]


class _Quiet:
    def emit(self, **event) -> None:
        pass


# -- the structured search's compute phase --------------------------------------------------------

def engine(extra_compute: bool = False, monkeypatch=None) -> structured.Engine:
    if extra_compute:
        # a second compute lever (as the precision knobs will be), to see the combinations
        other = knobs.EnvKnob("env.FAKE_MATH", variable="FAKE_MATH", default=None,
                              allowed="'A', null", valid=lambda v: v in (None, "A"),
                              candidates=lambda m: [None, "A"], help="x", label="math",
                              compute=True)
        monkeypatch.setitem(knobs.KNOBS, other.name, other)
    machine = machine16()
    space = build_space(machine, {"allocator": "default"})
    return structured.Engine(structured.StructuredSpace(space, machine), replicates=1)


def run_plan(eng, score, stop_at="threads", limit=40):
    study = optuna.create_study(direction="maximize")
    add(study, eng, eng.base, 1000.0, "reference", "baseline")
    add(study, eng, eng.base, 1005.0, "noise", structured.REPLICATE)
    steps = []
    for _ in range(limit):
        step = eng.next_step(seen(study, eng))
        if step is None or step.phase == stop_at:
            break
        steps.append(step)
        add(study, eng, step.params, score(eng.s.settings(step.params)), step.phase)
    return study, steps


def test_the_compute_phase_comes_right_after_the_layout_around_its_leader():
    eng = engine()
    assert eng.dims["compute"] == [XLA.name]
    assert XLA.name not in eng.dims["data"]
    assert structured.PHASES.index("compute") == structured.PHASES.index("layout") + 1

    def score(s):
        return 1000.0 * (2.0 if s["instances"] == 4 else 1.0)

    _, steps = run_plan(eng, score)
    phases = [s.phase for s in steps]
    compute = [s for s in steps if s.phase == "compute"]
    assert phases.index("compute") > max(i for i, p in enumerate(phases) if p == "layout")
    # each value alone, from the layout's leader (4 instances)
    assert sorted(eng.s.settings(s.params)[XLA.name] for s in compute) == sorted(
        knobs.XLA_VALUES)
    assert all(eng.s.settings(s.params)["instances"] == 4 for s in compute)


def test_compute_levers_are_measured_together_not_assumed_to_add_up(monkeypatch):
    eng = engine(extra_compute=True, monkeypatch=monkeypatch)
    assert eng.dims["compute"] == [XLA.name, "env.FAKE_MATH"]

    def score(s):   # each lever alone 1.3x, together they cancel
        xla, math = XLA.on(s[XLA.name]), s["env.FAKE_MATH"] == "A"
        return 1000.0 * (1.3 if xla != math else 1.0)

    study, steps = run_plan(eng, score)
    compute = [eng.s.settings(s.params) for s in steps if s.phase == "compute"]
    together = [s for s in compute if XLA.on(s[XLA.name]) and s["env.FAKE_MATH"] == "A"]
    assert len(together) == 1 and len(compute) == 4     # 2 + 1 alone, then the pair
    history = seen(study, eng)
    leader = eng.s.settings(eng.pick(history, eng.noise(history)).params)
    assert XLA.on(leader[XLA.name]) != (leader["env.FAKE_MATH"] == "A")   # one lever, not both


def test_a_short_search_screens_every_compute_lever_before_a_second_value_of_any(monkeypatch):
    # XLA has two levels, the other lever one value: the first two compute trials are XLA's
    # first level and the other lever, not XLA's two levels (a 10-trial quickstart with a
    # tolerance has two compute trials: bf16 math must be one of them)
    eng = engine(extra_compute=True, monkeypatch=monkeypatch)
    _, steps = run_plan(eng, lambda s: 1000.0)
    compute = [eng.s.settings(s.params) for s in steps if s.phase == "compute"]
    firsts = [(s[XLA.name], s["env.FAKE_MATH"]) for s in compute[:3]]
    assert firsts == [(knobs.XLA_VALUES[0], None), (None, "A"), (knobs.XLA_VALUES[1], None)]


def test_a_compute_knob_ships_only_beyond_noise():
    eng = engine()
    base = eng.base
    study = optuna.create_study(direction="maximize")
    add(study, eng, base, 1000.0, "reference", "baseline")
    add(study, eng, base, 1020.0, "noise", structured.REPLICATE)   # noise ~5.6%
    add(study, eng, {**base, "instances": 2}, 1800.0, "layout")
    # XLA 3% faster on 2 instances: beyond one standard error, within noise
    add(study, eng, {**base, "instances": 2, XLA.name: LEVEL2}, 1855.0, "compute")
    history = seen(study, eng)
    noise = eng.noise(history)
    assert 1855 / 1800 < 1 + noise and 1855 > 1800 * (1 + noise / 2)
    leader = eng.s.settings(eng.pick(history, noise).params)
    assert leader["instances"] == 2 and leader[XLA.name] is None
    # 1.4x beyond noise: kept
    add(study, eng, {**base, "instances": 2, XLA.name: LEVEL1}, 2520.0, "compute")
    history = seen(study, eng)
    leader = eng.s.settings(eng.pick(history, eng.noise(history)).params)
    assert leader[XLA.name] == LEVEL1


# -- a search: a model XLA cannot compile, and the tuned file -------------------------------------

def xla_study(write_config, trials: int = 10):
    return write_config(FAST.replace(
        "n_trials: 8", f"n_trials: {trials}\n  sampler: structured") + """\
space:
  allocator: default
  instances: default
  tf_data: {private_threadpool_size: default, max_intra_op_parallelism: default}
  env: {TF_ENABLE_ONEDNN_OPTS: default}
""")


def test_a_trial_xla_cannot_compile_fails_cleanly_and_the_search_goes_on(
        fake_worker, write_config, monkeypatch):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "xla-fail")
    monkeypatch.setenv("FAKE_SHAPE", "peak")
    outcome = run_search(xla_study(write_config))
    trials = load_study().trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(XLA.on(t.user_attrs["settings"][XLA.name]) for t in failed)
    assert all("XLA could not run this model" in t.user_attrs["fail_reason"] for t in failed)
    assert any(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["phase"] == "threads"
               for t in trials)
    assert any("FAIL" in line and "XLA could not run" in line for line in outcome.lines)
    assert outcome.tuned["verdict"] == "tuned"
    assert "TF_XLA_FLAGS" not in (outcome.tuned["settings"].get("env") or {})
    assert "advice" not in outcome.tuned["result"]


def test_show_reports_the_first_steps_and_the_advice(tmp_path, capsys):
    path = make_tuned(tmp_path, env={"TF_XLA_FLAGS": LEVEL2})
    doc = yaml.safe_load(path.read_text())
    doc["result"].update(
        throughput={"median": 1200.0}, baseline_throughput={"median": 1000.0},
        first_steps={"steps": 14, "seconds": 2.5, "extra_seconds": 2.1, "processes": 4},
        baseline_first_steps={"steps": 6, "seconds": 0.4, "extra_seconds": 0.3,
                              "processes": 4},
        advice=[XLA.jit_advice(), XLA.cache_advice(LEVEL2)])
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2.50 s for the first 14 steps, 2.10 s more than steady steps (baseline 0.30 s " \
           "more)" in out
    assert "jit_compile=True" in out and "--tf_xla_persistent_cache_directory=DIR" in out
    shown = compare.format_show(results.from_tuned_file(path), "json")
    assert '"extra_seconds": 2.1' in shown
    # a damaged field is one line naming it
    doc["result"]["first_steps"]["extra_seconds"] = "lots"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "result.first_steps.extra_seconds" in err and len(err.strip().splitlines()) == 1


def test_a_ten_trial_training_search_still_reaches_the_declared_knobs():
    """configs/sequential_map.yaml's budget (10 trials, training, two declared knobs, two
    allocators installed): the compute phase takes two trials before the declared knobs, and the
    map's parallelism (its 2x lever) is still measured and led with."""
    from tuner.base.host import Machine

    machine = Machine(visible_cpus=2, affinity=(0, 1), cpu_quota=None, usable_cpus=2,
                      physical_cores=2, sockets=1, numa_nodes=1, cpu_model="sim", arch="x86_64",
                      hostname="sim", python="3", memory_bytes=None, tf_version="fake",
                      onednn_default=True,
                      extra={"allocators": {"tcmalloc": "/t.so", "jemalloc": "/j.so"}})
    space = build_space(machine, {}, mode="train", pipeline=Pipeline(
        knobs={"map_parallelism": 1, "prefetch": 1}),
        knobs={"map_parallelism": [1, 2, 4, "autotune"], "prefetch": [1, 2, "autotune"]})
    eng = structured.Engine(structured.StructuredSpace(space, machine), replicates=1)
    assert eng.dims["compute"] == [XLA.name]

    def score(s):
        return 1000.0 * (1.6 if s["knobs.map_parallelism"] in (2, 4, "autotune") else 1.0)

    study = optuna.create_study(direction="maximize")
    add(study, eng, eng.base, 1000.0, "reference", "baseline")
    add(study, eng, eng.s.params_of(space.expert(machine)), 1001.0,
        "reference", "expert")
    for number in range(2, 10):
        step = eng.next_step(seen(study, eng), remaining=10 - number)
        add(study, eng, step.params, score(eng.s.settings(step.params)), step.phase)
    phases = [t.user_attrs["phase"] for t in study.trials]
    assert phases.count("compute") == 2 and "knobs" in phases
    assert phases.index("compute") < phases.index("knobs")
    history = seen(study, eng)
    leader = eng.s.settings(eng.pick(history, eng.noise(history)).params)
    assert leader["knobs.map_parallelism"] != 1 and leader[XLA.name] is None


def test_a_search_adopts_xla_where_it_wins_with_its_first_steps_and_advice(
        fake_worker, write_config, monkeypatch):
    monkeypatch.setenv("FAKE_SHAPE", "xla")
    outcome = run_search(xla_study(write_config))
    doc = outcome.tuned
    assert doc["verdict"] == "tuned"
    assert doc["settings"]["env"] == {"TF_XLA_FLAGS": LEVEL2}
    # XLA carries the gain; a thread count the fake ignores may ride along when its trial's
    # noise happened to land above the XLA-only one (the noise bar is two baseline processes)
    assert XLA.name in doc["result"]["carried_by"]
    assert set(doc["result"]["carried_by"]) <= {XLA.name, *(k.name for k in knobs.THREADS)}
    assert doc["result"]["first_steps"] == {"steps": 3, "seconds": 0.9, "extra_seconds": 0.8,
                                            "processes": doc["validation"]["rounds"]}
    assert doc["result"]["baseline_first_steps"]["extra_seconds"] == 0.2
    assert doc["result"]["advice"] == [XLA.jit_advice(), XLA.cache_advice(LEVEL2)]
    # the file it wrote reads back through the strict reader and show
    shown = compare.format_show(results.from_tuned_file(outcome.tuned_path), "text")
    assert "0.80 s more than steady steps (baseline 0.20 s more)" in shown
    assert "jit_compile=True" in shown
    tree = tunedfile.read(outcome.tuned_path).settings
    assert settings.flatten(tree)[XLA.name] == LEVEL2
