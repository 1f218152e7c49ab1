"""XLA auto-clustering on vs off, interleaved in fresh processes: one config's workload measured
with TensorFlow's defaults and with ``TF_XLA_FLAGS`` set, the order alternating each round.

    python benchmarks/xla.py configs/quickstart.yaml configs/encoder.yaml --rounds 4 \\
        --json benchmarks/data/xla-2cpu-DATE.json

The children are benchmarks/remeasure.py's (no tuner code measures): each builds the workload,
warms up for ``--warmup`` seconds (XLA compiles there), then times ``--seconds`` of steps. Prints
each config's medians with bootstrap intervals and the median of the per-round ratios; the JSON
keeps every process's number, the machine (CPU model and compute instructions), TensorFlow's
version and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from remeasure import bootstrap, run_one  # noqa: E402

from tuner import knobs
from tuner.base import host  # noqa: E402


def measure(config: Path, rounds: int, seconds: float, warmup: float, flags: str) -> dict:
    wl = yaml.safe_load(config.read_text())["workload"]
    common = {"base_dir": str(config.resolve().parent), "model": wl["model"], "data": wl["data"],
              "mode": wl.get("mode", "predict"), "seconds": seconds, "warmup": warmup,
              "apply": None}
    plain = {"intra_op_parallelism_threads": 0, "inter_op_parallelism_threads": 0, "env": {}}
    on = {**plain, "env": {"TF_XLA_FLAGS": flags}}
    runs: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(rounds):
        for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
            runs[name].append(run_one({**common, "settings": on if name == "on" else plain}))
        print(f"{config.name} round {r + 1}/{rounds}: off {runs['off'][-1]:.1f}  "
              f"on {runs['on'][-1]:.1f} samples/s", flush=True)
    ratios = [a / b for a, b in zip(runs["on"], runs["off"])]
    out = {"runs": runs, "round_ratios": ratios, "median_ratio": statistics.median(ratios)}
    for name, values in runs.items():
        lo, hi = bootstrap(values)
        out[name] = {"median": statistics.median(values), "ci95": [lo, hi]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--flags", default=knobs.XLA_VALUES[-1], choices=knobs.XLA_VALUES)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    machine = host.detect()
    doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
           "machine": {"cpus": machine.usable_cpus, "cpu_model": machine.cpu_model,
                       "cpu_flags": sorted(machine.cpu_flags),
                       "python": platform.python_version(),
                       "tf_version": host.installed_tf_version()},
           "flags": args.flags, "rounds": args.rounds, "seconds": args.seconds,
           "warmup": args.warmup, "load_before": list(os.getloadavg()), "examples": {}}
    for config in args.configs:
        doc["examples"][config.stem] = measure(config, args.rounds, args.seconds, args.warmup,
                                               args.flags)
    doc["load_after"] = list(os.getloadavg())
    print(f"\n{'config':<12} {'off samples/s':>22} {'on samples/s':>22} {'on/off (rounds)':>16}")
    for name, ex in doc["examples"].items():
        print(f"{name:<12} {ex['off']['median']:>10.1f} [{ex['off']['ci95'][0]:.0f}-"
              f"{ex['off']['ci95'][1]:.0f}] {ex['on']['median']:>10.1f} [{ex['on']['ci95'][0]:.0f}-"
              f"{ex['on']['ci95'][1]:.0f}] {ex['median_ratio']:>15.3f}x")
    print(f"load average before {doc['load_before'][0]:.1f}, after {doc['load_after'][0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
