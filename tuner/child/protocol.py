"""What the parent and a trial child say: ``python -m tuner.child.worker TASK RESULT``.

The parent writes the task as JSON to TASK; the child writes its result as JSON to RESULT, a path
user code knows nothing about, so nothing the workload prints can corrupt it. While it runs, the
child appends progress events (one JSON object a line) to the task's ``progress`` file, which the
parent polls for timeout messages and pruning; they are advisory only.

Task (:func:`task` builds it; the parent's trial runner adds the rest)::

    kind         "preflight" (build once, two steps), "measure" (one trial's windows) or
                 "diagnose" (the defaults on the real pipeline, then on one cached batch)
    workload     {"model", "data", "mode", "base_dir"}: the builders, as the config names them;
                 for a model file also {"model_format", "signature", "batch_size",
                 "input_shapes"} (``model`` is then its path, ``data`` may be null)
    usable_cpus  CPUs the child may use; affinity: their ids
    measure      {"warmup_seconds", "min_warmup_steps", "window_seconds", "windows"} (preflight,
                 measure)
    guard        {"reference", "samples", "train"}: the accuracy guard (tuner/child/guard.py); the
                 preflight writes the reference file, a measure task compares against it
    knobs        the declared builder knobs, name -> candidates (preflight, measure)
    capacity, cgroup_root, diagnose   the CPU time the process may use, where the cgroup files
                 are, and the plan of rounds (diagnose)
    protocol, settings, progress      added for every child: this version, the trial's settings
                 (flat names), the progress file
    cpus, barrier                     added per pinned child: the CPUs to pin to, and for
                 instances run together {"dir", "index", "count", "timeout"}

Result: ``{"protocol", "ok", "child_started", ...}``; on failure ``error`` (one line shown to the
user) and ``traceback``; on success the kind's fields (:func:`result_problem` checks those the
parent relies on). Progress events: ``{"phase": name}`` as each phase begins and
``{"window": index, "throughput": samples_per_second}`` after each measuring window.

Protocol history (``PROTOCOL``):
  1: first version (``diagnose`` added later; an old worker answers it "unknown task kind").
  2: tasks carry the declared ``knobs`` and settings ``knobs.<name>``; results report the tf.data
     options the dataset carried and the knob values the builders got; the preflight reports the
     optional tf.data options and autotune algorithms this TensorFlow has, the pipeline's
     transformations and each knob's builders and baseline. (A version-1 child would ignore the
     knobs and measure something else, hence the bump.)
  3: the workload may be a model file: ``model`` its path, ``model_format`` (keras or
     saved_model), ``signature``, ``batch_size`` and ``input_shapes``, inputs generated unless
     ``data`` names a builder; settings carry ``batch_size``; the preflight reports
     ``generated_inputs`` and ``inputs``. (A version-2 child would import the path as a
     builder.)
  4: the accuracy guard: preflight and measure tasks may carry ``guard`` {"reference" (the
     .npz path), "samples", "train"}; the preflight then saves the reference samples and
     outputs there and reports ``guard`` {"samples", "batch", "outputs"}; a measure result
     reports ``accuracy`` {"rel_l2", "max_abs", "top1", "samples", "batch"} (or {"error"});
     builders are seeded before they build. Settings may carry the precision knobs. (A
     version-3 child would measure without the guard and let reduced precision through.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

PROTOCOL = 4

KINDS = ("preflight", "measure", "diagnose")


class WorkloadSpec(Protocol):
    """Where the builders are (``config.Workload`` is one)."""

    model: str | None
    data: str | None
    mode: str
    base_dir: str
    model_format: str | None


def task(kind: str, workload: WorkloadSpec, *, usable_cpus: int, affinity: Sequence[int],
         measure: Mapping[str, Any] | None = None,
         knobs: Mapping[str, Sequence[Any]] | None = None,
         capacity: float | None = None, cgroup_root: str | None = None,
         diagnose: Mapping[str, Any] | None = None,
         guard: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A task of ``kind`` for ``workload``; the fields a kind does not use are left out."""
    if kind not in KINDS:
        raise ValueError(f"task kind {kind!r} is not one of {', '.join(KINDS)}")
    built: dict[str, Any] = {
        "kind": kind,
        "workload": {"model": workload.model, "data": workload.data, "mode": workload.mode,
                     "base_dir": workload.base_dir},
        "usable_cpus": usable_cpus,
        "affinity": list(affinity),
    }
    if getattr(workload, "model_format", None):
        built["workload"].update(
            model_format=workload.model_format, signature=workload.signature,  # type: ignore
            batch_size=workload.batch_size,  # type: ignore[attr-defined]
            input_shapes={k: list(v) for k, v in workload.input_shapes.items()})  # type: ignore
    optional = {"measure": dict(measure) if measure is not None else None,
                "knobs": ({name: list(values) for name, values in knobs.items()}
                          if knobs is not None else None),
                "capacity": capacity, "cgroup_root": cgroup_root,
                "diagnose": dict(diagnose) if diagnose is not None else None,
                "guard": dict(guard) if guard is not None else None}
    built.update({key: value for key, value in optional.items() if value is not None})
    return built


class WorkloadProblem(Exception):
    """The user's workload is unusable; the message is the result's ``error``, shown as it is."""


def describe(exc: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class Progress:
    """The child's side of the progress file (nothing is written without one)."""

    def __init__(self, path: str | None) -> None:
        self._handle = open(path, "a", buffering=1) if path else None

    def emit(self, **event: Any) -> None:
        if self._handle:
            self._handle.write(json.dumps(event) + "\n")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _measure_problem(result: dict[str, Any]) -> str | None:
    windows = result.get("windows")
    if not isinstance(windows, list) or not windows:
        return "no measurement windows"
    for window in windows:
        value = window.get("throughput") if isinstance(window, dict) else None
        if not _positive(value):
            return f"window throughput {value!r}"
    return None


def _diagnose_problem(result: dict[str, Any]) -> str | None:
    measured = result.get("measured")
    if not isinstance(measured, dict):
        return "no measurement"
    for key in ("seconds", "throughput", "cpu_seconds", "user_seconds", "system_seconds",
                "input_wait"):
        value = measured.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            return f"measured {key} {value!r}"
    if not measured["seconds"] > 0 or not measured["throughput"] > 0:
        return "nothing measured"
    if not isinstance(result.get("threads"), dict):
        return "no thread counts"
    return None


def result_problem(kind: str, result: dict[str, Any]) -> str | None:
    """What makes a successful ``kind`` result unusable (its fields the parent relies on), or
    None when it is usable."""
    if kind == "measure":
        return _measure_problem(result)
    if kind == "diagnose":
        return _diagnose_problem(result)
    return None
