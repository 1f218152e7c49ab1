"""Measuring: the preflight, and one measurement of a configuration in a fresh child.

Every child runs under the host-wide lock, so two tuner processes on one host never measure at
the same time. :class:`Measurer` is all the benchmarks need; the search adds a study around it.
What a measurement is worth to the search is :func:`score` of its :func:`summary`: throughput,
or for a latency objective the inverse of that latency percentile, so that "higher is better"
and a ratio of scores is a speedup everywhere (pruning, ranking, validation).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import tuner.knobs as knobs
from tuner.base import host as host_mod
from tuner.base import stats
from tuner.base.lock import host_lock
from tuner.base.render import terminal
from tuner.child import guard as guard_mod
from tuner.child import protocol
from tuner.config import Accuracy, Config, Objective
from tuner.errors import TrialFailed, WorkloadError, check_stop
from tuner.knobs import settings as settings_mod
from tuner.knobs import space as space_mod
from tuner.search.trial import Watch, run_child, worker_command

Say = Callable[[str], None]


def print_line(line: str = "") -> None:
    """The command line's progress output: on stderr, so that stdout carries only the result
    (a summary, a table, a JSON document) and pipes cleanly; its lines may echo names and reasons
    from a shared study, so nothing in them acts on the terminal."""
    print(terminal(line), file=sys.stderr, flush=True)



def task(kind: str, config: Config, machine: host_mod.Machine,
         reference: str | None = None) -> dict[str, Any]:
    """The task a child gets: what to build, how to measure, and where it may run; with
    ``reference`` (the accuracy guard's file), what the guard compares."""
    guard = None
    if reference is not None and guarded(config):
        guard = {"reference": reference, "samples": config.accuracy.samples,
                 "train": config.accuracy.train}
    return protocol.task(kind, config.workload, usable_cpus=machine.usable_cpus,
                         affinity=machine.affinity, measure=dataclasses.asdict(config.measure),
                         knobs=config.knobs, guard=guard)


def guarded(config: Config) -> bool:
    """Whether the accuracy guard runs for this workload: a model's outputs in predict mode,
    the loss after a few steps in train mode with ``accuracy.train``; a data-only workload has
    no numbers to guard."""
    mode = config.workload.mode
    return mode == "predict" or (mode == "train" and config.accuracy.train)


def guard_file(config: Config, machine: host_mod.Machine) -> Path:
    """Where the reference of ``machine``'s type is kept: beside a SQLite study's database
    (``results/<study>.guard/``), else beside the tuned file (``guard/``); never in the tuned
    file's folder before a result is written there, unless the study is remote."""
    name = f"{host_mod.type_id(machine.fingerprint())}.npz"
    url = config.storage
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        database = Path(url[len("sqlite:///"):])
        return database.parent / f"{config.study_name}.guard" / name
    return Path(config.output).parent / "guard" / name


@dataclass(frozen=True)
class Preflight:
    """What building the workload once taught: the machine with its TensorFlow, the pipeline,
    the space to search, and what one child costs."""

    result: dict[str, Any]
    machine: host_mod.Machine
    space: space_mod.Space
    child_seconds: float
    # the accuracy guard's reference (the defaults' samples and outputs) for this machine type
    guard: str | None = None

    @property
    def batch_size(self) -> Any:
        return self.result.get("batch_size")


@dataclass(frozen=True)
class Measurer:
    """Runs children for one config on one machine, one at a time per host."""

    config: Config
    machine: host_mod.Machine
    say: Say = print_line
    guard: str | None = None    # the accuracy guard's reference file (from the preflight)

    def run(self, kind: str, settings: dict[str, Any],
            watch: Watch | None = None, reference: str | None = None) -> dict[str, Any]:
        def waiting() -> None:
            self.say("  waiting: another tuner process is measuring on this host")

        check_stop()   # a SIGTERM whose KeyboardInterrupt was swallowed still stops here

        with host_lock(on_wait=waiting, timeout=self.config.search.timeout):
            return run_child(task(kind, self.config, self.machine,
                                  reference if kind == "preflight" else self.guard),
                             timeout=self.config.search.trial_timeout, settings=settings,
                             watch=watch, worker=worker_command(), **self._placement(settings))

    def _placement(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The allocator library, CPU set and instance CPU sets a trial's settings mean here."""
        plan = settings_mod.process_plan(settings, self.machine)
        return {"preload": plan.preload, "cpus": plan.cpus, "instances": plan.instances}

    def measure(self, settings: dict[str, Any], watch: Watch | None = None) -> dict[str, Any]:
        """One measurement of ``settings`` in a fresh child: the child's raw result."""
        return self.run("measure", settings, watch)

    def preflight(self) -> Preflight:
        """Build the workload once in a child (a typo costs seconds, not a study), then the
        space it is searched in. Raises WorkloadError when the workload cannot run."""
        cfg = self.config
        self.say(f"preflight: building {cfg.workload.describe()} once (timeout "
                 f"{cfg.search.trial_timeout:g} s)")
        fresh = None
        if guarded(cfg):   # kept beside the tuned file once the machine type is known
            handle, fresh = tempfile.mkstemp(prefix="tuner-guard-", suffix=".npz")
            os.close(handle)
            os.unlink(fresh)
        try:
            result = self.run("preflight", knobs.default_settings(), reference=fresh)
        except TrialFailed as exc:
            if fresh is not None and os.path.exists(fresh):
                os.unlink(fresh)
            raise WorkloadError(f"{cfg.path}: workload preflight failed: {exc.reason}") from None
        machine = self.machine.with_tensorflow(result["tf_version"], result.get("onednn_enabled"),
                                               result.get("openmp"))
        reference = self._keep_reference(fresh, result, machine)
        pipeline = space_mod.Pipeline.from_preflight(result)
        self.say(f"preflight ok: TensorFlow {result['tf_version']}, batch size "
                 f"{result['batch_size']}, first step {result['timings']['first_step']:.2f} s, "
                 f"next step {result['timings']['second_step'] * 1e3:.1f} ms")
        for spec in result.get("inputs") or []:
            shape = "unknown rank" if spec["shape"] is None else \
                "(" + ", ".join("None" if d is None else str(d) for d in spec["shape"]) + ")"
            self.say(f"  input {spec['name']}: {shape} {spec['dtype']}"
                     + (" (generated)" if result.get("generated_inputs") else ""))
        if pipeline.ops:
            self.say(f"  pipeline: {' -> '.join(pipeline.ops)}")
        for name, info in (result.get("knobs") or {}).items():
            self.say(f"  knob {name}: to {' and '.join('build_' + r for r in info['builders'])}"
                     f"; baseline {info['baseline']!r} ({info['source']})")
        space = space_mod.build_space(machine, cfg.space, mode=cfg.workload.mode,
                                      pipeline=pipeline, knobs=cfg.knobs,
                                      precision=cfg.accuracy.allows_precision(cfg.workload.mode))
        return Preflight(result=result, machine=machine, space=space,
                         child_seconds=_child_seconds(result, cfg), guard=reference)

    def _keep_reference(self, fresh: str | None, result: dict[str, Any],
                        machine: host_mod.Machine) -> str | None:
        """The reference of this machine type: the one kept from an earlier run (the same
        samples and weights; a builder whose outputs differ from it is refused), else this
        preflight's."""
        info = result.get("guard")
        if fresh is None or not info or "samples" not in info or not os.path.isfile(fresh):
            if fresh is not None and os.path.exists(fresh):
                os.unlink(fresh)
            return None
        kept = guard_file(self.config, machine)
        if kept.is_file():
            differs = guard_mod.differs(fresh, str(kept))
            os.unlink(fresh)
            if differs:
                raise WorkloadError(f"{self.config.path}: {differs}")
        else:
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(fresh, kept)
        self.say(f"  accuracy guard: {info['samples']} reference samples at batch "
                 f"{info['batch']} ({_limit_text(self.config)})")
        return str(kept)


def _child_seconds(preflight: dict[str, Any], config: Config) -> float:
    timings = preflight.get("timings", {})
    build = sum(timings.get(k, 0.0) for k in ("import", "build_model", "build_data"))
    return (preflight.get("startup_seconds", 0.5) + build + config.measure.warmup_seconds
            + config.measure.windows * config.measure.window_seconds + 0.5)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready summary of one measurement, stored on a trial and used in validation."""
    windows = [w["throughput"] for w in result["windows"]]
    throughput = stats.summarize(windows)
    throughput["windows"] = windows
    throughput["unit"] = "samples/s"
    timings = dict(result.get("timings", {}))
    timings["startup"] = result.get("startup_seconds", 0.0)
    timings["total"] = result.get("wall_seconds", 0.0)
    return {
        "throughput": throughput,
        # plain numbers next to the nested block, so optuna-dashboard can list and sort them
        "throughput_median": throughput["median"],
        "throughput_spread": throughput["rel_spread"],
        "step_latency_p50_ms": (result.get("step_latency_ms") or {}).get("p50"),
        "cpu_saturation": result["cpu_saturation"],
        "per_core_busy": result.get("per_core_busy"),
        "input_wait": result.get("input_wait"),
        "step_latency_ms": result.get("step_latency_ms"),
        "peak_rss_mb": round(result.get("peak_rss_bytes", 0) / 2 ** 20, 1),
        "threads": result.get("threads"),
        "tf_threading": result.get("tf_threading"),
        "batch_size": result.get("batch_size"),
        "allocator": result.get("allocator"),   # what was really mapped into the child
        # the tf.data options the dataset really carried, and the knob values the builders got
        **({"tf_data_options": result["tf_data_options"]} if result.get("tf_data_options")
           else {}),
        **({"knobs": result["knobs"]} if result.get("knobs") else {}),
        # the accuracy guard's deviation from the defaults' outputs (tuner/guard.py)
        **({"accuracy": result["accuracy"]} if result.get("accuracy") else {}),
        "affinity": result.get("affinity"),
        **({"instances": result["instances"]} if result.get("instances") else {}),
        # the first steps' cost (tracing, XLA's compilation): what a short job pays
        **({"first_steps": result["first_steps"]} if result.get("first_steps") else {}),
        "timings": timings,
    }


def score(attrs: dict[str, Any], objective: Objective) -> float:
    """What the search maximises for one measurement's summary: samples/s, or 1000 / ms of the
    objective's latency percentile."""
    pct = objective.percentile
    if pct is None:
        return float(attrs["throughput"]["median"])
    return 1000.0 / float(attrs["step_latency_ms"][pct])


def feasible(attrs: dict[str, Any], objective: Objective,
             accuracy: Accuracy | None = None) -> bool:
    """Whether a measurement meets the latency budget (always, without one) and, with
    ``accuracy``, the accuracy guard's limit (a measurement the guard did not check passes)."""
    budget = objective.latency_budget_ms
    if budget is not None and float((attrs.get("step_latency_ms") or {}).get(
            "p95", float("inf"))) > budget:
        return False
    return accuracy is None or (accuracy_excess(attrs, accuracy) or 0.0) <= 0.0


def accuracy_excess(attrs: dict[str, Any], accuracy: Accuracy) -> float | None:
    """How far a measurement's output deviation is beyond the guard's limit (> 0: beyond);
    None when the guard did not check it."""
    return guard_mod.excess(attrs.get("accuracy"), accuracy.metric, accuracy.tolerance)


def _limit_text(config: Config) -> str:
    metric, bound = guard_mod.limit(config.accuracy.metric, config.accuracy.tolerance)
    if config.accuracy.tolerance is None:
        return f"limit: float noise, {metric} <= {bound:g}"
    return f"limit: {metric} {'>=' if metric == 'top1' else '<='} {bound:g}"
