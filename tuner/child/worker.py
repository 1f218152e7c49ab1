"""The trial child: ``python -m tuner.child.worker TASK.json RESULT.json``.

One fresh process per measurement (the task and result shapes are in :mod:`tuner.child.protocol`).
The parent has already built this process's environment (the environment-variable knobs are in it);
here the child pins itself, builds the user's model and data (:mod:`tuner.child.workload`, which
applies the ``tf.config.threading`` knobs before the runtime initialises), runs the task and writes
the result, then ends without interpreter teardown.

Tasks: ``preflight`` (build once, two steps), ``measure`` (warm-up and windows,
:mod:`tuner.child.meter`) and ``diagnose`` (:mod:`tuner.child.probes`).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tuner.base import cpusets, host
from tuner.base.files import write_json_atomic
from tuner.child import meter, probes
from tuner.child.protocol import PROTOCOL, Progress, WorkloadProblem, describe
from tuner.child.workload import Workload, onednn_enabled, xla_state
from tuner.knobs import settings as settings_mod


def preflight(task: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Build model and data once and run one step, so a typo costs seconds, not a study."""
    timings: dict[str, float] = {}
    work = Workload(task, progress, timings)
    progress.emit(phase="first_step")
    t = time.perf_counter()
    work.run_step(work.first)
    timings["first_step"] = time.perf_counter() - t
    t = time.perf_counter()
    work.run_step(work.next_batch())
    timings["second_step"] = time.perf_counter() - t
    tf = work.tf
    available, algorithms = settings_mod.tf_data_available(tf)
    progress.emit(phase="guard")
    reference = work.guard_reference()
    return {
        **({"guard": reference} if reference is not None else {}),
        "batch_size": work.batch_size,
        "element_spec": work.element_spec,
        "tf_version": tf.__version__,
        "onednn_enabled": onednn_enabled(),
        "openmp": host.tf_uses_openmp(os.path.dirname(tf.__file__)),
        "model_params": work.model_params(),
        "generated_inputs": work.generated,
        "inputs": work.loaded.describe_inputs() if work.loaded is not None else None,
        "tf_data_options": available,
        "autotune_algorithms": algorithms,
        "pipeline": work.pipeline,
        "knobs": work.knob_info,
        "options_in_effect": work.options_in_effect,
        "timings": timings,
    }


def measure(task: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """One trial: the meter's windows, and what the process ran with."""
    import psutil

    timings: dict[str, float] = {}
    work = Workload(task, progress, timings)
    usable = int(task["usable_cpus"])
    compiles = settings_mod.compiles(task.get("settings") or {})
    try:
        measured = meter.measure(work, task["measure"], usable=usable,
                                 affinity=list(task.get("affinity") or range(usable)),
                                 progress=progress, timings=timings, barrier=task.get("barrier"),
                                 compiles=compiles)
    except WorkloadProblem:
        raise
    except Exception as exc:
        if not compiles:
            raise
        # XLA compiles the clusters on their first steps: a model it cannot compile fails
        # there, and the trial says so (the search goes on without it)
        raise WorkloadProblem(f"XLA could not run this model (TF_XLA_FLAGS="
                              f"{os.environ.get('TF_XLA_FLAGS', '')!r}): {describe(exc)}") \
            from exc
    progress.emit(phase="guard")
    t = time.perf_counter()
    accuracy = work.guard_check()
    timings["guard"] = time.perf_counter() - t
    return {
        **({"accuracy": accuracy} if accuracy is not None else {}),
        "batch_size": work.batch_size,
        **measured,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "threads": psutil.Process().num_threads(),
        "tf_threading": {
            "intra_op": work.tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": work.tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "allocator": host.allocator_in_process(),
        "xla": xla_state(),
        "tf_data_options": work.options_in_effect,
        "knobs": work.knobs,
        "timings": timings,
    }


TASKS = {"preflight": preflight, "measure": measure, "diagnose": probes.diagnose}


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    if task.get("protocol") != PROTOCOL:
        raise WorkloadProblem(f"worker protocol {task.get('protocol')!r} is not {PROTOCOL}; the "
                              f"parent and child are different tuner versions")
    progress = Progress(task.get("progress"))
    kind = task["kind"]
    if kind not in TASKS:
        raise WorkloadProblem(f"unknown task kind {kind!r}")
    return TASKS[kind](task, progress)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tuner.child.worker TASK.json RESULT.json", file=sys.stderr)
        return 2
    task_path, result_path = args
    started = time.time()
    try:
        task = json.loads(Path(task_path).read_text())
        # Pin before TensorFlow starts any thread: threads inherit the affinity they start with.
        why = cpusets.set_affinity(task.get("cpus"))
        if why:
            raise WorkloadProblem(why)
        payload = {"protocol": PROTOCOL, "ok": True, **run_task(task)}
        code = 0
    except WorkloadProblem as exc:
        payload = {"protocol": PROTOCOL, "ok": False, "error": str(exc),
                   "traceback": traceback.format_exc()[-4000:]}
        code = 3
    except BaseException as exc:  # anything else is a bug or a user-code exit: report it all
        payload = {"protocol": PROTOCOL, "ok": False, "error": describe(exc),
                   "traceback": traceback.format_exc()[-4000:]}
        code = 4
    payload["child_started"] = started
    write_json_atomic(result_path, payload, durable=False)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: TensorFlow's thread pools can take seconds to wind down, and
    # everything that matters is already on disk.
    os._exit(code)


if __name__ == "__main__":
    main()
