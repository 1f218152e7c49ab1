"""TensorFlow's defaults vs oneDNN's bfloat16 math, interleaved in fresh processes, with the
accuracy guard's deviation of each process.

    python benchmarks/precision.py configs/quickstart.yaml --rounds 5 --json out.json

Uses tuner's own measurement (``tuner.search.measuring.Measurer``: one fresh child per measurement,
under the host lock) and its guard: the preflight saves the reference samples at the defaults,
then each round measures the defaults and ``ONEDNN_DEFAULT_FPMATH_MODE=BF16`` (order alternating).
Prints each round, the median of the per-round speedups, and each setting's deviation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner import config, knobs
from tuner.base import host
from tuner.search import measuring  # noqa: E402

FPMATH = "env.ONEDNN_DEFAULT_FPMATH_MODE"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", default="BF16", choices=("BF16", "F16"))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuner-precision-"))
    cfg = config.load(args.config).replace(storage=f"sqlite:///{work}/study.db",
                                           output=str(work / "tuned.yaml"))
    machine = host.detect()
    pre = measuring.Measurer(cfg, machine).preflight()
    measurer = measuring.Measurer(cfg, pre.machine, guard=pre.guard)
    entries = [("defaults", knobs.default_settings()),
               (args.mode, {**knobs.default_settings(), FPMATH: args.mode})]
    runs: dict[str, list[dict]] = {name: [] for name, _ in entries}
    for r in range(args.rounds):
        order = entries if r % 2 == 0 else entries[::-1]
        parts = []
        for name, settings in order:
            summary = measuring.summary(measurer.measure(settings))
            runs[name].append(summary)
            parts.append(f"{name} {summary['throughput']['median']:.1f} "
                         f"(rel_l2 {summary['accuracy']['rel_l2']:.3g})")
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(parts), flush=True)
    base = [m["throughput"]["median"] for m in runs["defaults"]]
    other = [m["throughput"]["median"] for m in runs[args.mode]]
    ratios = [o / b for o, b in zip(other, base)]
    result = {
        "config": args.config, "rounds": args.rounds, "mode": args.mode,
        "cpu_model": pre.machine.cpu_model, "cpu_flags": sorted(pre.machine.cpu_flags),
        "usable_cpus": pre.machine.usable_cpus, "tf_version": pre.machine.tf_version,
        "throughput": {"defaults": base, args.mode: other},
        "speedup_per_round": ratios, "speedup_median": statistics.median(ratios),
        "deviation": {name: [m["accuracy"] for m in ms] for name, ms in runs.items()},
    }
    print(f"{args.mode} vs defaults: median of per-round ratios {result['speedup_median']:.3f}x "
          f"(rounds {', '.join(f'{x:.3f}' for x in ratios)}); rel_l2 defaults "
          f"{max(m['accuracy']['rel_l2'] for m in runs['defaults']):.3g}, {args.mode} "
          f"{max(m['accuracy']['rel_l2'] for m in runs[args.mode]):.3g}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
