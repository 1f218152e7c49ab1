"""Independent re-check of a tuned file's output deviation: TensorFlow's defaults vs the file
applied with ``tuner.apply()``, the same seeded weights, the same inputs.

    python benchmarks/accuracy_check.py results/quickstart/tuned.yaml --json out.json

Shares no code with tuner's accuracy guard (tuner/child/guard.py): two fresh Python processes, each
seeds Keras (its own seed, not the guard's), builds the workload named in the tuned file and
takes the first ``--samples`` samples of the workload's own data; the defaults process sets
nothing (every variable tuner could set removed from its environment), the tuned process calls
``cfg = tuner.apply(path)`` before importing TensorFlow (so the environment knobs, the graph
rewrite and the Keras policy take effect as in production). Each computes the model's outputs at
batch 16 and saves them; this process compares them (relative L2 error, max abs error, top-1
agreement) and checks the file's recorded deviation and tolerance. Exit 0 when the re-checked
deviation is within the file's tolerance (or, without one, within float noise 1e-4 rel_l2).

    python benchmarks/accuracy_check.py --config configs/quickstart.yaml \
        --env ONEDNN_DEFAULT_FPMATH_MODE=BF16

checks one raw setting instead (no tuned file, no tuner.apply(): the second process only gets
the variable), to cross-check the deviation the guard reported for it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import yaml

SEED = 20261202
NOISE_REL_L2 = 1e-4
# what tuner's knobs may set in a job's environment: none of it in the defaults process
OWNED = ("ONEDNN_DEFAULT_FPMATH_MODE", "TF_SET_ONEDNN_FPMATH_MODE", "TF_ENABLE_ONEDNN_OPTS",
         "TF_XLA_FLAGS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS",
         "KMP_BLOCKTIME", "KMP_AFFINITY", "LD_PRELOAD")

CHILD = textwrap.dedent("""
    import importlib.util, json, os, sys
    import numpy as np
    spec = json.loads(sys.argv[1])
    if spec.get("apply"):
        import tuner
        cfg = tuner.apply(spec["apply"])
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(spec["seed"])
    def load(ref):
        path, func = ref.rsplit(":", 1)
        file = os.path.join(spec["base_dir"], path)
        sys.path.insert(0, os.path.dirname(file))
        m = importlib.util.spec_from_file_location("wl", file)
        mod = importlib.util.module_from_spec(m); m.loader.exec_module(mod)
        return getattr(mod, func)
    if spec["model"].endswith((".keras", ".h5")):
        # a model file: its own weights; inputs drawn from a seeded normal, its input's shape
        model = keras.saving.load_model(os.path.join(spec["base_dir"], spec["model"]),
                                        safe_mode=True)
        shape = tuple(model.inputs[0].shape[1:])
        x = np.random.default_rng(spec["seed"]).standard_normal(
            (spec["samples"], *shape)).astype(model.inputs[0].dtype)
    else:
        model = load(spec["model"])()
        keras.utils.set_random_seed(spec["seed"])
        data = load(spec["data"])()
        xs, have = [], 0
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            xs.append(np.asarray(x)); have += xs[-1].shape[0]
            if have >= spec["samples"]:
                break
        x = np.concatenate(xs)[:spec["samples"]]
    forward = tf.function(lambda t: model(t, training=False))
    out = np.concatenate([np.asarray(forward(tf.constant(x[i:i + 16])), dtype=np.float64)
                          for i in range(0, len(x), 16)])
    np.savez(spec["out"], inputs=x, outputs=out)
    print(json.dumps({"env": {k: os.environ.get(k) for k in ("ONEDNN_DEFAULT_FPMATH_MODE",
                                                             "TF_XLA_FLAGS")},
                      "rewrite": tf.config.optimizer.get_experimental_options().get(
                          "auto_mixed_precision_onednn_bfloat16"),
                      "policy": keras.mixed_precision.global_policy().name}))
""")


def run(spec: dict, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tuned", nargs="?")
    parser.add_argument("--config", help="with --env: the workload config (no tuned file)")
    parser.add_argument("--env", action="append", default=[], metavar="VAR=VALUE",
                        help="with --config: the setting the second process gets")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    if args.tuned:
        doc = yaml.safe_load(Path(args.tuned).read_text())
    elif args.config and args.env:
        workload = yaml.safe_load(Path(args.config).read_text())["workload"]
        doc = {"workload": {**workload, "config": str(Path(args.config).resolve())},
               "settings": {"env": dict(e.split("=", 1) for e in args.env)}, "result": {}}
    else:
        parser.error("give a tuned file, or --config with --env VAR=VALUE")
    wl = doc["workload"]
    if wl["mode"] != "predict":
        sys.exit("accuracy_check: predict workloads only")
    work = Path(tempfile.mkdtemp(prefix="accuracy-check-"))
    base = Path(wl["config"]).parent if wl.get("config") else Path(args.tuned).parent
    common = {"base_dir": str(base), "model": wl["model"], "data": wl.get("data"),
              "samples": args.samples, "seed": SEED}
    plain_env = {k: v for k, v in os.environ.items() if k not in OWNED}
    seen_defaults = run({**common, "out": str(work / "defaults.npz")}, plain_env)
    if args.tuned:
        seen_tuned = run({**common, "out": str(work / "tuned.npz"),
                          "apply": str(Path(args.tuned).resolve())}, plain_env)
    else:
        seen_tuned = run({**common, "out": str(work / "tuned.npz")},
                         {**plain_env, **doc["settings"]["env"]})
    a, b = np.load(work / "defaults.npz"), np.load(work / "tuned.npz")
    assert np.array_equal(a["inputs"], b["inputs"]), "the two processes saw different inputs"
    ref, out = a["outputs"], b["outputs"]
    diff = out - ref
    checked = {"rel_l2": float(np.linalg.norm(diff) / np.linalg.norm(ref)),
               "max_abs": float(np.abs(diff).max()),
               "top1": float(np.mean(out.argmax(1) == ref.argmax(1)))
               if out.ndim == 2 and out.shape[1] > 1 else None}
    recorded = (doc.get("result") or {}).get("accuracy") or {}
    if not args.tuned:      # a raw setting: its deviation, judged at the usual 0.05 tolerance
        recorded = {"metric": "rel_l2", "tolerance": 0.05}
    metric = recorded.get("metric", "rel_l2")
    tolerance = recorded.get("tolerance")
    if tolerance is None:
        metric, limit = "rel_l2", NOISE_REL_L2
    else:
        limit = 1 - tolerance if metric == "top1" else tolerance
    value = checked[metric]
    within = value >= limit if metric == "top1" else value <= limit
    result = {"tuned_file": args.tuned, "verdict": doc.get("verdict"),
              "settings": doc.get("settings"), "samples": args.samples, "seed": SEED,
              "in_process": {"defaults": seen_defaults, "tuned": seen_tuned},
              "recorded": recorded, "rechecked": checked, "metric": metric, "limit": limit,
              "within": bool(within)}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
