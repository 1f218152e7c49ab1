"""Several pinned instances against one process using every CPU, for one workload.

    python benchmarks/instances.py configs/branchy.yaml --counts 1,2,4 --rounds 3

Each count k runs k fresh processes at once, each pinned to its own whole cores (the tuner's
``instances`` setting: physical cores first, one NUMA node first) and each with TensorFlow's
default thread pools, which size themselves from the process's CPUs; they warm up, wait for each
other, and measure the same seconds. Throughput is their sum, step latency the worst instance's.
Counts are interleaved in rounds with the order rotated, every measurement a fresh process set.
Prints a table (median over rounds with min-max) and writes JSON under results/benchmarks/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuner import config as config_mod  # noqa: E402
from tuner import knobs as knobs_mod  # noqa: E402
from tuner.base import cpusets, host  # noqa: E402
from tuner.knobs import space as space_mod  # noqa: E402
from tuner.search import measuring  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--counts", default=None,
                        help="instance counts, comma-separated (default: 1, 2, 4, ... up to the "
                             "usable CPUs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=1.0, help="seconds per window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()

    cfg = config_mod.load(args.config)
    cfg = cfg.replace(measure=config_mod.Measure(warmup_seconds=args.warmup,
                                                 window_seconds=args.window,
                                                 windows=args.windows),
                      search=config_mod.Search(trial_timeout=300))
    measurer = measuring.Measurer(cfg, host.detect(),
                                  lambda line: print("  " + line, flush=True))
    m = measurer.preflight().machine
    counts = ([int(c) for c in args.counts.split(",")] if args.counts
              else knobs_mod.KNOBS["instances"].candidates(m))
    print(f"machine: {m.cpu_model}, {m.usable_cpus} usable CPUs, {m.physical_cores} physical "
          f"cores, {m.numa_nodes} NUMA node(s); TensorFlow {m.tf_version}", flush=True)
    runs: dict[int, list[dict]] = {k: [] for k in counts}
    for r in range(args.rounds):
        shift = r % len(counts)
        for k in counts[shift:] + counts[:shift]:
            settings = dict(space_mod.default_settings(), instances=k)
            attrs = measuring.summary(measurer.measure(settings))
            runs[k].append(attrs)
            print(f"  round {r + 1}: {k} instance(s): {attrs['throughput']['median']:.1f} "
                  f"samples/s, p95 {attrs['step_latency_ms']['p95']:.1f} ms", flush=True)

    one = statistics.median(a["throughput"]["median"] for a in runs[counts[0]])
    rows = []
    print(f"\n| instances | CPUs each | samples/s median [min-max] | vs {counts[0]} | "
          f"p95 step latency (ms) | CPU saturation |")
    print("|---|---|---|---|---|---|")
    for k in counts:
        tps = [a["throughput"]["median"] for a in runs[k]]
        sets = cpusets.instance_sets(m, k) if k > 1 else [list(m.affinity)]
        p95 = statistics.median(a["step_latency_ms"]["p95"] for a in runs[k])
        sat = statistics.median(a["cpu_saturation"] for a in runs[k])
        rows.append({"instances": k, "cpus": sets, "throughput": tps,
                     "vs_first": statistics.median(tps) / one, "p95_ms": p95, "saturation": sat})
        print(f"| {k} | {len(sets[0])} | {statistics.median(tps):.1f} [{min(tps):.1f}-"
              f"{max(tps):.1f}] | {statistics.median(tps) / one:.3f}x | {p95:.1f} | {sat:.2f} |")
    out = ROOT / "results" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"instances-{Path(args.config).stem}-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps({"config": args.config, "machine": m.as_dict(), "rows": rows,
                                "rounds": args.rounds, "window": args.window,
                                "windows": args.windows}, indent=1))
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
