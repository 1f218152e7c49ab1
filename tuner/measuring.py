"""Measuring: the preflight, and one measurement of a configuration in a fresh child.

Every child runs under the host-wide lock, so two tuner processes on one host never measure at
the same time. :class:`Measurer` is all the benchmarks need; the search adds a study around it.
What a measurement is worth to the search is :func:`score` of its :func:`summary`: throughput,
or for a latency objective the inverse of that latency percentile, so that "higher is better"
and a ratio of scores is a speedup everywhere (pruning, ranking, validation).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Callable

from . import host as host_mod
from . import knobs, protocol, stats
from . import settings as settings_mod
from . import space as space_mod
from .config import Config, Objective
from .errors import TrialFailed, WorkloadError, check_stop
from .lock import host_lock
from .render import terminal
from .trial import Watch, run_child, worker_command

Say = Callable[[str], None]


def print_line(line: str = "") -> None:
    """The command line's progress output: on stderr, so that stdout carries only the result
    (a summary, a table, a JSON document) and pipes cleanly; its lines may echo names and reasons
    from a shared study, so nothing in them acts on the terminal."""
    print(terminal(line), file=sys.stderr, flush=True)



def task(kind: str, config: Config, machine: host_mod.Machine) -> dict[str, Any]:
    """The task a child gets: what to build, how to measure, and where it may run."""
    return protocol.task(kind, config.workload, usable_cpus=machine.usable_cpus,
                         affinity=machine.affinity, measure=dataclasses.asdict(config.measure),
                         knobs=config.knobs)


@dataclass(frozen=True)
class Preflight:
    """What building the workload once taught: the machine with its TensorFlow, the pipeline,
    the space to search, and what one child costs."""

    result: dict[str, Any]
    machine: host_mod.Machine
    space: space_mod.Space
    child_seconds: float

    @property
    def batch_size(self) -> Any:
        return self.result.get("batch_size")


@dataclass(frozen=True)
class Measurer:
    """Runs children for one config on one machine, one at a time per host."""

    config: Config
    machine: host_mod.Machine
    say: Say = print_line

    def run(self, kind: str, settings: dict[str, Any],
            watch: Watch | None = None) -> dict[str, Any]:
        def waiting() -> None:
            self.say("  waiting: another tuner process is measuring on this host")

        check_stop()   # a SIGTERM whose KeyboardInterrupt was swallowed still stops here

        with host_lock(on_wait=waiting, timeout=self.config.search.timeout):
            return run_child(task(kind, self.config, self.machine),
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
        try:
            result = self.run("preflight", knobs.default_settings())
        except TrialFailed as exc:
            raise WorkloadError(f"{cfg.path}: workload preflight failed: {exc.reason}") from None
        machine = self.machine.with_tensorflow(result["tf_version"], result.get("onednn_enabled"),
                                               result.get("openmp"))
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
                                      pipeline=pipeline, knobs=cfg.knobs)
        return Preflight(result=result, machine=machine, space=space,
                         child_seconds=_child_seconds(result, cfg))


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


def feasible(attrs: dict[str, Any], objective: Objective) -> bool:
    """Whether a measurement meets the latency budget (always, without one)."""
    budget = objective.latency_budget_ms
    return budget is None or float((attrs.get("step_latency_ms") or {}).get(
        "p95", float("inf"))) <= budget
