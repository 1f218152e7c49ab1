"""Independent re-measurement of a tuned file: TensorFlow's defaults vs the tuned settings.

    python benchmarks/remeasure.py results/branchy/tuned.yaml --rounds 8

Shares no measurement code with tuner (``python -m tuner check`` is the tool's own re-check, on
validation's code; this script is the independent one that checks it): each round starts two fresh
Python processes (order alternating) that build the workload named in the tuned file, warm up, and
time a fixed number of seconds of steps. The defaults process sets nothing; the tuned process
applies the file the way a production job does, with ``cfg = tuner.apply(path)``,
``ds.with_options(cfg.dataset_options())`` and declared knobs passed to the builders from
``cfg.knobs`` (``--plain`` applies it with plain TensorFlow calls and the file's knob values
instead). The defaults process calls the builders without arguments: the pipeline as written.
Applied through tuner, each tuned measurement runs under ``python -m tuner run``, so an allocator,
a CPU set and several instances (their throughputs summed, measured over the same seconds) are
applied as in production. Prints a table of both configurations (median with a bootstrap 95%
interval over processes), the measured speedup with validation's statistics (its 95% interval
resampling both sides, the permutation test's p-value), and the speedup the search reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml

CHILD = textwrap.dedent("""
    import importlib.util, inspect, json, os, sys, time
    spec = json.loads(sys.argv[1])
    if spec.get("apply"):
        import tuner
        cfg = tuner.apply(spec["apply"])
    import tensorflow as tf
    s = spec["settings"]
    if not spec.get("apply"):
        if s.get("intra_op_parallelism_threads"):
            tf.config.threading.set_intra_op_parallelism_threads(s["intra_op_parallelism_threads"])
        if s.get("inter_op_parallelism_threads"):
            tf.config.threading.set_inter_op_parallelism_threads(s["inter_op_parallelism_threads"])
    def load(ref):
        path, func = ref.rsplit(":", 1)
        file = os.path.join(spec["base_dir"], path)
        sys.path.insert(0, os.path.dirname(file))
        m = importlib.util.spec_from_file_location("wl", file)
        mod = importlib.util.module_from_spec(m); m.loader.exec_module(mod)
        return getattr(mod, func)
    if spec.get("apply"):
        knobs = cfg.knobs
    else:
        knobs = {k: tf.data.AUTOTUNE if v == "autotune" else v
                 for k, v in (s.get("knobs") or {}).items()}
    def call(func):
        params = inspect.signature(func).parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return func(**knobs)
        return func(**{k: v for k, v in knobs.items() if k in params})
    ds = call(load(spec["data"]))
    opts = cfg.dataset_options() if spec.get("apply") else tf.data.Options()
    td = {} if spec.get("apply") else (s.get("tf_data") or {})
    if td.get("private_threadpool_size"):
        opts.threading.private_threadpool_size = td["private_threadpool_size"]
    if td.get("max_intra_op_parallelism"):
        opts.threading.max_intra_op_parallelism = td["max_intra_op_parallelism"]
    for group, holder in (("autotune", opts.autotune),
                          ("optimization", opts.experimental_optimization)):
        for key, value in (td.get(group) or {}).items():
            if value is not None and key == "autotune_algorithm":
                value = tf.data.experimental.AutotuneAlgorithm[value]
            if value is not None:
                setattr(holder, key, value)
    it = iter(ds.with_options(opts).repeat())
    mode = spec["mode"]
    if mode == "data":
        step = lambda b: None
    else:
        model = call(load(spec["model"]))
        if mode == "predict":
            f = tf.function(lambda x: model(x, training=False))
            step = lambda b: f(b[0] if isinstance(b, (tuple, list)) else b)
        else:
            f = tf.function(model.train_step)
            step = lambda b: f(tuple(b))
    def size(b):
        x = b[0] if isinstance(b, (tuple, list)) else b
        return int(tf.nest.flatten(x)[0].shape[0])
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < spec["warmup"]:
        step(next(it))
    count = int(os.environ.get("TUNER_INSTANCES") or 1)
    if count > 1:  # instances started by the launcher measure the same seconds
        d = spec["barrier"]
        open(os.path.join(d, "ready-" + os.environ["TUNER_INSTANCE"]), "w").close()
        while len([f for f in os.listdir(d) if f.startswith("ready-")]) < count:
            time.sleep(0.005)
    n = 0
    t0 = time.perf_counter()
    while True:
        b = next(it); step(b); n += size(b)
        t = time.perf_counter() - t0
        if t >= spec["seconds"]:
            break
    # one write, so the lines of concurrent instances sharing this pipe never interleave
    sys.stdout.write(json.dumps({"throughput": n / t}) + "\\n")
    sys.stdout.flush()
""")


def run_one(spec: dict) -> float:
    """One measurement in fresh processes. Applied through tuner, the child runs under
    ``python -m tuner run`` as production would: it preloads the allocator, pins the CPU set and
    starts every instance (their throughputs are summed); plain settings run one process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS",
                        "TF_XLA_FLAGS", "LD_PRELOAD", "TUNER_TUNED_FILE", "TUNER_INSTANCE",
                        "TUNER_INSTANCES")}
    if not spec.get("apply"):
        env.update({k: str(v) for k, v in (spec["settings"].get("env") or {}).items()})
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="remeasure-") as barrier:
        spec = {**spec, "barrier": barrier}
        child = [sys.executable, "-c", CHILD, json.dumps(spec)]
        if spec.get("apply"):
            child = [sys.executable, "-m", "tuner", "run", "--tuned", spec["apply"], "--quiet",
                     "--", *child]
        out = subprocess.run(child, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"child failed: {out.stderr[-2000:]}")
    values = [float(v) for v in re.findall(r'\{"throughput": ([0-9.eE+-]+)\}', out.stdout)]
    if not values:
        raise SystemExit(f"child printed no throughput: {out.stdout[-500:]} {out.stderr[-1500:]}")
    return sum(values)


def bootstrap(values: list[float], seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(4000))
    return meds[100], meds[3899]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("tuned")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--plain", action="store_true",
                        help="apply the tuned settings with plain TensorFlow calls, "
                             "not tuner.apply()")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    doc = yaml.safe_load(Path(args.tuned).read_text())
    placed = {k: doc["settings"].get(k) for k in ("allocator", "cpus", "instances")}
    if args.plain and (placed["allocator"] not in (None, "system") or placed["cpus"]
                       or (placed["instances"] or {}).get("count", 1) > 1):
        raise SystemExit(f"--plain cannot apply {placed}: drop --plain to apply them through "
                         f"the launcher")
    wl = doc["workload"]
    config_dir = str(Path(wl["config"]).parent)
    base = {"intra_op_parallelism_threads": 0, "inter_op_parallelism_threads": 0,
            "tf_data": {}, "env": {}}
    common = {"base_dir": config_dir, "model": wl["model"], "data": wl["data"], "mode": wl["mode"],
              "seconds": args.seconds, "warmup": args.warmup}
    runs: dict[str, list[float]] = {"defaults": [], "tuned": []}
    for r in range(args.rounds):
        order = ["defaults", "tuned"] if r % 2 == 0 else ["tuned", "defaults"]
        for name in order:
            settings = base if name == "defaults" else doc["settings"]
            via = None if name == "defaults" or args.plain else str(Path(args.tuned).resolve())
            runs[name].append(run_one({**common, "settings": settings, "apply": via}))
        print(f"round {r + 1}/{args.rounds}: defaults {runs['defaults'][-1]:.1f}  "
              f"tuned {runs['tuned'][-1]:.1f}", flush=True)
    print()
    print(f"{'config':<10} {'median samples/s':>17} {'95% CI':>21} {'min':>9} {'max':>9}")
    for name, values in runs.items():
        lo, hi = bootstrap(values)
        print(f"{name:<10} {statistics.median(values):>17.1f} {f'{lo:.1f}-{hi:.1f}':>21} "
              f"{min(values):>9.1f} {max(values):>9.1f}")
    # the measuring above is independent of tuner's; the statistics are the same as
    # validation's and `tuner check`'s (both sides resampled, the exact permutation test)
    from tuner.base import stats

    measured = statistics.median(runs["tuned"]) / statistics.median(runs["defaults"])
    lo, hi = stats.ratio_ci(runs["tuned"], runs["defaults"])
    p = stats.permutation_p_greater(runs["tuned"], runs["defaults"])
    reported = doc["result"]["speedup"]
    print(f"\nre-measured speedup {measured:.3f}x (95% interval {lo:.3f}-{hi:.3f}, p={p:.3g}); "
          f"the search reported {reported:.3f}x (verdict {doc['verdict']}); difference "
          f"{100 * (reported / measured - 1):+.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "measured_speedup": measured,
                                               "measured_speedup_ci95": [lo, hi],
                                               "p_value": p,
                                               "reported_speedup": reported}, indent=1))


if __name__ == "__main__":
    main()
