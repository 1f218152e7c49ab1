"""A fake trial child that speaks the real worker protocol, for fast tests of the study logic.

Usage (as the parent runs it): python -S fake_worker.py TASK.json RESULT.json

Throughput is a known function of the settings, so tests know which configuration must win:
``FAKE_SHAPE=peak`` (default) peaks at intra=2, inter=1 (1.3x the defaults); ``flat`` is the same
for every setting; ``layout`` depends only on the instances (``FAKE_INSTANCE_GAIN``) and costs
0.8x when intra-op threads outnumber the process's CPUs (an instances-dominated model); ``step``
is ``FAKE_GAIN`` (default 1.1) times the defaults for every setting with an intra-op count;
``xla`` is ``FAKE_XLA_GAIN`` (default 1.6) with ``TF_XLA_FLAGS`` at level 2, 1x otherwise.
``FAKE_NOISE`` is the relative noise (default 0.01); with ``FAKE_SEED_FILE`` (a counter file)
each measurement draws it from its own seeded stream, so a search is reproducible.
``FAKE_BEHAVIOUR`` makes
chosen trials misbehave: ``crash-intra-N`` (os.abort when intra == N), ``hang-intra-N``,
``raise-intra-N``, ``garble-intra-N``, ``exit-intra-N``, ``crash-all``, ``crash-measure``
(every trial, not the preflight), ``preflight-fail``, ``xla-fail`` (every trial whose
environment turns XLA on fails as the real worker reports a model XLA cannot compile); with
``FAKE_BEHAVIOUR_FROM=PATH`` only once PATH exists (a test creates it, e.g. after a given
validation round, to fail a configuration from that round on), and as the file says when it is
not empty (``crash-intra-3``, or ``crash-settings-{JSON}``: the one configuration whose flat
settings are that JSON). A model file's batch size (the setting ``batch_size``, else the
task's) scales throughput by batch/(batch+4), 1x at 32, and the step latency with it. With
several instances each reports its share of the throughput, times ``FAKE_INSTANCE_GAIN``
(default 1: instances neither help nor hurt), so per-step latency grows with the instance
count. ``FAKE_TF_VERSION`` is the TensorFlow version the preflight reports (default
fake-1.0): another value is another machine type.

``FAKE_SCALING`` gives throughput a known curve over the number of CPUs the child is pinned to
(``n``, the task's CPU set): ``linear`` (n x), ``saturating`` (min(n, FAKE_KNEE) x, knee 2 by
default) or ``declining`` (1.6x at 2 CPUs, then worse: 1, 1.6, 1.4, 1.1 for 1, 2, 4, 8); the
step latency follows. ``FAKE_NO_PIN=1`` leaves the child's affinity alone and reads ``n`` from
the task, so a simulated machine with more CPUs than this one can be sized.

``diagnose`` tasks get a plausible result: TensorFlow-like pools sized from the affinity mask;
``FAKE_DIAG=input`` makes the pipeline 0.3x the cached batch with a sequential Python map, and
``FAKE_THROTTLE=N`` adds N throttled periods to the simulated cgroup's cpu.stat during the run
(the counters are read through tuner.base.host, as the real worker does).

tf.data and declared knobs: by default the fake stands for a TensorFlow without the optional
tf.data options (the preflight reports none, as an old build would); ``FAKE_TF_DATA=all`` reports
them all and ``FAKE_PIPELINE=Range,Map,Batch`` the pipeline's transformations. Declared knobs
(the task's ``knobs``) reach every builder; each knob's baseline is its value in
``FAKE_KNOB_DEFAULTS`` (JSON), else its first candidate. A trial's ``knobs.map_parallelism``
multiplies throughput (1: 1x, 2: 1.6x, 4: 1.5x, autotune: 1.7x; the baseline 1), and every
measurement reports the knob values and tf.data options it received.

The accuracy guard: a preflight whose task has ``guard`` writes a small valid reference ``.npz``
(the standard library writes it: this child has no NumPy) and reports its samples; a measurement
reports ``accuracy`` whose rel_l2 is the sum of ``FAKE_DEVIATION`` (JSON, ``"knob=value"`` ->
rel_l2) over the settings it matches (0.0 for none), max_abs 10x that, top1 1.0 below 0.01 and
0.75 above. A setting ``env.ONEDNN_DEFAULT_FPMATH_MODE`` multiplies throughput by
``FAKE_BF16_GAIN`` (default 1.0).
"""

from __future__ import annotations

import json
import os
import sys
import time

# Started with ``python -S`` (helpers.fake_worker_command): no site-packages, no .pth hooks, as
# the fake needs only the standard library and this checkout's tuner (what a trial child runs).
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What a measurement needs from tuner (the protocol version, the declared knobs' prefix, the
# tf.data options' names) comes in FAKE_FACTS, which helpers.fake_worker_env() computes from the
# registry in the test process: importing tuner.knobs (and tuner.base.host under it) took ~50 ms of
# CPU, twice what the rest of a fake child costs, in each of a thousand children per test run.
# Without FAKE_FACTS (a test that sets TUNER_WORKER itself) they are imported from tuner. The
# preflight, diagnose and the knob registry's own facts import tuner where they need it.


def tuner_facts() -> dict:
    """What FAKE_FACTS holds, from tuner itself (helpers.fake_worker_env() passes this on)."""
    from tuner import knobs
    from tuner.child.protocol import PROTOCOL

    return {"protocol": PROTOCOL, "knob_prefix": knobs.KNOB_PREFIX,
            "tf_data": [knob.name for knob in knobs.TF_DATA]}


FACTS = json.loads(os.environ["FAKE_FACTS"]) if os.environ.get("FAKE_FACTS") else tuner_facts()
PROTOCOL = FACTS["protocol"]


def declared(settings: dict) -> dict:
    """The declared knobs of ``settings`` by argument name, as ``tuner.knobs.declared``."""
    prefix = FACTS["knob_prefix"]
    return {name[len(prefix):]: value for name, value in settings.items()
            if name.startswith(prefix)}

MAP_PARALLELISM = {1: 1.0, 2: 1.6, 4: 1.5, "autotune": 1.7}


def throughput(settings: dict) -> float:
    shape = os.environ.get("FAKE_SHAPE", "peak")
    if shape == "flat":
        return 1000.0
    if shape == "layout":
        # instances carry the gain (FAKE_INSTANCE_GAIN); more intra-op threads than this
        # process has CPUs cost 20%; nothing else matters
        cpus = len(os.sched_getaffinity(0))
        return 1000.0 * (0.8 if (settings.get("intra_op_parallelism_threads") or 0) > cpus
                         else 1.0)
    if shape == "xla":   # XLA auto-clustering carries the gain (FAKE_XLA_GAIN), at level 2
        gain = float(os.environ.get("FAKE_XLA_GAIN", "1.6"))
        flags = settings.get("env.TF_XLA_FLAGS") or ""
        return 1000.0 * (gain if "auto_jit=2" in flags else 1.0)
    if shape == "step":
        gain = float(os.environ.get("FAKE_GAIN", "1.1"))
        return 1000.0 * (gain if settings.get("intra_op_parallelism_threads") else 1.0)
    intra = settings.get("intra_op_parallelism_threads") or 0
    inter = settings.get("inter_op_parallelism_threads") or 0
    factor = {0: 1.0, 1: 0.6, 2: 1.2, 3: 0.9, 4: 0.8}.get(intra, 0.7)
    factor *= {0: 1.0, 1: 1.0833, 2: 1.0, 4: 0.9}.get(inter, 0.9)
    factor *= MAP_PARALLELISM.get(declared(settings).get("map_parallelism", 1), 1.0)
    return 1000.0 * factor


def scaling(cpus: int) -> float:
    """The FAKE_SCALING factor for a process on ``cpus`` CPUs."""
    shape = os.environ.get("FAKE_SCALING", "")
    if shape == "linear":
        return float(cpus)
    if shape == "saturating":
        return float(min(cpus, int(os.environ.get("FAKE_KNEE", "2"))))
    if shape == "declining":
        return {1: 1.0, 2: 1.6, 3: 1.5, 4: 1.4}.get(cpus, 1.1)
    return 1.0


def misbehave(kind: str, settings: dict) -> str | None:
    spec = os.environ.get("FAKE_BEHAVIOUR", "")
    if not spec:
        return None
    gate = os.environ.get("FAKE_BEHAVIOUR_FROM")
    if gate:   # misbehave only once the test created this file; what it holds, if anything
        if not os.path.exists(gate):
            return None
        with open(gate) as f:
            spec = f.read().strip() or spec
    if spec == "crash-all":
        return "crash"
    if spec == "crash-measure":
        return "crash" if kind == "measure" else None
    if spec == "preflight-fail":
        return "raise" if kind == "preflight" else None
    action, _, value = spec.partition("-settings-")
    if value:   # one configuration exactly: ACTION-settings-{json of its flat settings}
        return action if kind == "measure" and json.loads(value) == settings else None
    if spec == "xla-fail":
        return "xla" if kind == "measure" and settings.get("env.TF_XLA_FLAGS") else None
    action, _, value = spec.partition("-intra-")
    if value and kind == "measure" and settings.get("intra_op_parallelism_threads") == int(value):
        return action
    return None


def write_npz(path: str, arrays: dict) -> None:
    """``np.savez`` of float64 arrays (name -> (shape, flat values)), by the standard library."""
    import struct
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, (shape, values) in arrays.items():
            dims = "(" + "".join(f"{d}," for d in shape) + ")" if len(shape) != 1 \
                else f"({shape[0]},)"
            header = "{'descr': '<f8', 'fortran_order': False, 'shape': " + dims + ", }"
            pad = 64 - (10 + len(header) + 1) % 64
            header = header + " " * pad + "\n"
            body = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + \
                struct.pack(f"<{len(values)}d", *values)
            archive.writestr(name + ".npy", body)


def fake_reference(task: dict) -> dict:
    samples = int(task["guard"]["samples"])
    write_npz(task["guard"]["reference"], {
        "batch": ((), [8.0]),
        "input_0": ((samples, 4), [float(i % 7) for i in range(samples * 4)]),
        "output_0": ((samples, 10), [float(i % 10) for i in range(samples * 10)]),
    })
    return {"samples": samples, "batch": 8, "outputs": [[samples, 10]]}


def fake_accuracy(settings: dict) -> dict:
    table = json.loads(os.environ.get("FAKE_DEVIATION", "{}"))
    rel = 0.0
    for key, value in table.items():
        name, _, wanted = key.partition("=")
        if name in settings and str(settings[name]) == wanted:
            rel += float(value)
    return {"rel_l2": rel, "max_abs": rel * 10, "top1": 1.0 if rel < 0.01 else 0.75,
            "samples": 16, "batch": 8}


def fake_diagnosis(task: dict) -> dict:
    from pathlib import Path

    from tuner.base import host

    root = task["cgroup_root"]
    before = host.cpu_throttling(root)
    extra = int(os.environ.get("FAKE_THROTTLE", "0"))
    if before and extra:
        stat = Path(root) / before["cgroup"].lstrip("/") / "cpu.stat"
        bumped = []
        for line in stat.read_text().splitlines():
            key, value = line.split()
            add = {"nr_periods": 2 * extra, "nr_throttled": extra,
                   "throttled_usec": extra * 50000}.get(key, 0)
            bumped.append(f"{key} {int(value) + add}")
        stat.write_text("\n".join(bumped) + "\n")
    after = host.cpu_throttling(root)
    cpus = len(task["affinity"])
    input_bound = os.environ.get("FAKE_DIAG") == "input"
    pipeline_tp = 300.0 if input_bound else 980.0
    transformations = [{"op": "RangeDataset", "functions": [], "python": []}]
    if input_bound:
        transformations.append({"op": "MapDataset", "functions": ["decode"],
                                "python": ["tf.py_function"], "sequential": True,
                                "stateful": True})
    transformations.append({"op": "BatchDatasetV2", "functions": [], "python": []})
    return {
        "batch_size": 32, "tf_version": "fake-1.0", "onednn_enabled": True,
        "tf_threading": {"intra_op": 0, "inter_op": 0},
        "threads": {"main": 1, "intra_op_pool": cpus, "inter_op_pool": cpus, "tf_data": 3,
                    "other": 2, "total": 2 * cpus + 6, "busy_threads": 3,
                    "cpus_by_group": {"intra_op_pool": 1.5, "tf_data": 0.2},
                    "run_queue_wait_per_cpu_second": 0.1},
        "pipeline": {"inspected": True, "transformations": transformations,
                     "map_parallelization": True},
        "measured": {"seconds": 10.0, "throughput": pipeline_tp,
                     "windows": [pipeline_tp] * 5, "input_wait": 0.6 if input_bound else 0.02,
                     "cpu_seconds": 18.0, "user_seconds": 17.0, "system_seconds": 1.0,
                     "per_core_busy": [0.9] * min(cpus, 2),
                     "step_latency_ms": {"p50": 30.0, "p90": 33.0}},
        "cached": {"seconds": 3.0, "throughput": 1000.0, "windows": [1000.0] * 3,
                   "round_ratios": [pipeline_tp / 1000.0] * 3},
        "throttling": ({**after, **{k: after[k] - before[k] for k in
                                    ("nr_periods", "nr_throttled", "throttled_seconds")}}
                       if before and after else None),
        "warmup_steps": 5, "timings": {"import": 0.0, "warmup": 0.0, "measure": 10.0},
    }


def tf_data_facts() -> tuple[list[str], list[str]]:
    """The optional tf.data options (all, with FAKE_TF_DATA=all; else none) and the autotune
    algorithms, as the real preflight reports them from an installed TensorFlow."""
    from tuner import knobs

    options = [name for name, knob in knobs.KNOBS.items() if getattr(knob, "optional", False)]
    return (options if os.environ.get("FAKE_TF_DATA") == "all" else [],
            list(knobs.AUTOTUNE_ALGORITHMS))


def knob_info(declared: dict) -> dict:
    defaults = json.loads(os.environ.get("FAKE_KNOB_DEFAULTS", "{}"))
    return {name: {"builders": ["data"], "baseline": defaults.get(name, values[0]),
                   "source": "builder default" if name in defaults else "first candidate"}
            for name, values in declared.items()}


def main() -> None:
    task_path, result_path = sys.argv[1:3]
    task = json.loads(open(task_path).read())
    started = time.time()
    settings = task["settings"]
    bad = misbehave(task["kind"], settings)
    if bad == "crash":
        os.abort()
    if bad == "hang":
        time.sleep(3600)
    if bad == "exit":
        print("fake: exiting on purpose", file=sys.stderr)
        sys.exit(7)
    if bad == "garble":
        open(result_path, "w").write("{not json")
        return
    if bad == "raise":
        payload = {"protocol": PROTOCOL, "ok": False, "error": "workload.model: fake raised "
                   "ValueError: boom", "child_started": started}
        open(result_path, "w").write(json.dumps(payload))
        sys.exit(3)
    if bad == "xla":   # what the real worker reports when XLA cannot compile the model
        payload = {"protocol": PROTOCOL, "ok": False, "child_started": started,
                   "error": f"XLA could not run this model (TF_XLA_FLAGS="
                            f"{os.environ.get('TF_XLA_FLAGS', '')!r}): InvalidArgumentError: "
                            f"Input 1 to node Tile must be a compile-time constant"}
        open(result_path, "w").write(json.dumps(payload))
        sys.exit(3)
    progress = open(task["progress"], "a", buffering=1)
    if task["kind"] == "preflight":
        options, algorithms = tf_data_facts()
        workload = task["workload"]
        payload = {"protocol": PROTOCOL, "ok": True, "batch_size": workload.get("batch_size") or 32,
                   "element_spec": "fake",
                   "generated_inputs": bool(workload.get("model_format"))
                   and workload.get("data") is None,
                   "tf_version": os.environ.get("FAKE_TF_VERSION", "fake-1.0"),
                   "onednn_enabled": True, "model_params": 1,
                   "openmp": os.environ.get("FAKE_OPENMP") == "1",
                   "tf_data_options": options, "autotune_algorithms": algorithms,
                   "pipeline": (os.environ["FAKE_PIPELINE"].split(",")
                                if os.environ.get("FAKE_PIPELINE") else None),
                   "knobs": knob_info(task.get("knobs") or {}),
                   "timings": {"import": 0.0, "build_model": 0.0, "build_data": 0.0,
                               "first_step": 0.01, "second_step": 0.001},
                   **({"guard": fake_reference(task)} if task.get("guard") else {}),
                   "child_started": started}
    elif task["kind"] == "diagnose":
        payload = {"protocol": PROTOCOL, "ok": True, "child_started": started,
                   **fake_diagnosis(task)}
    else:
        import random

        rng = random.Random()
        counter = os.environ.get("FAKE_SEED_FILE")
        if counter:  # measurements run one at a time (the host lock), so no race here
            from pathlib import Path

            done = int(Path(counter).read_text() or 0) if Path(counter).exists() else 0
            Path(counter).write_text(str(done + 1))
            rng = random.Random(done)
        noise = float(os.environ.get("FAKE_NOISE", "0.01"))
        if task.get("cpus") and os.environ.get("FAKE_NO_PIN") != "1":
            os.sched_setaffinity(0, task["cpus"])
        mean = throughput(settings) * scaling(len(task.get("cpus") or task["affinity"]))
        if settings.get("env.ONEDNN_DEFAULT_FPMATH_MODE"):
            mean *= float(os.environ.get("FAKE_BF16_GAIN", "1.0"))
        # a model file's batch size searched: bigger batches gain throughput, and each one
        # takes longer (the workload's own batch, or 32, is 1x)
        batch = settings.get("batch_size") or task["workload"].get("batch_size") or 32
        if batch != 32:
            mean *= (batch / (batch + 4)) / (32 / 36)
        count = (task.get("barrier") or {}).get("count", 1)
        if count > 1:  # each instance gets its share; FAKE_INSTANCE_GAIN is the total's gain
            mean = mean * float(os.environ.get("FAKE_INSTANCE_GAIN", "1.0")) / count
        windows = []
        for index in range(task["measure"]["windows"]):
            value = mean * (1 + rng.gauss(0, noise))
            windows.append({"index": index, "seconds": 0.01, "steps": 10, "samples": 320,
                            "throughput": value, "cpu_saturation": 0.9, "input_wait": 0.05})
            progress.write(json.dumps({"window": index, "throughput": value}) + "\n")
            time.sleep(float(os.environ.get("FAKE_WINDOW_SLEEP", "0")))
        ms = batch * 1000 / mean
        payload = {"protocol": PROTOCOL, "ok": True, "batch_size": batch, "windows": windows,
                   "warmup_steps": 3,
                   # with XLA on, the first steps compile (as the real meter reports them)
                   "first_steps": {"steps": 3, "seconds": 0.9 if settings.get("env.TF_XLA_FLAGS")
                                   else 0.3, "extra_seconds": 0.8 if
                                   settings.get("env.TF_XLA_FLAGS") else 0.2},
                   "step_latency_ms": {"p50": ms, "p90": ms * 33 / 32,
                                       "p95": ms * 33.6 / 32, "p99": ms * 35 / 32, "steps": 50},
                   "affinity": sorted(os.sched_getaffinity(0)),
                   "allocator": os.environ.get("LD_PRELOAD", "system"),
                   "cpu_saturation": 0.9, "per_core_busy": [0.9, 0.9], "input_wait": 0.05,
                   "peak_rss_bytes": 100 * 2 ** 20, "threads": 5,
                   "tf_threading": {"intra_op": settings.get("intra_op_parallelism_threads"),
                                    "inter_op": settings.get("inter_op_parallelism_threads")},
                   "knobs": declared(settings),
                   "tf_data_options": {name: settings[name] for name in FACTS["tf_data"]
                                       if name in settings},
                   "timings": {"import": 0.0, "build_model": 0.0, "build_data": 0.0,
                               "warmup": 0.0, "measure": 0.05},
                   **({"accuracy": fake_accuracy(settings)} if task.get("guard") else {}),
                   "child_started": started}
    log = os.environ.get("FAKE_LOG")
    if log:  # start and end of this measurement, for the host-lock test
        with open(log, "a") as handle:
            # instances of one trial run together by design: the third column groups them
            group = (task.get("barrier") or {}).get("dir") or f"pid{os.getpid()}"
            handle.write(f"{started} {time.time()} {group}\n")
    tmp = result_path + ".tmp"
    open(tmp, "w").write(json.dumps(payload))
    os.replace(tmp, result_path)


if __name__ == "__main__":
    main()
