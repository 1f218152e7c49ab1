"""Record a ground-truth grid over process layout x threads x allocator for one workload.

    python benchmarks/grid.py configs/quickstart.yaml --out benchmarks/data/quickstart-2cpu.json

Every point of instances x allocator x intra-op x inter-op threads (the candidates the tuner
searches on this machine, everything else at TensorFlow's defaults) is measured in its own fresh
process, in a shuffled order; the baseline (TensorFlow's defaults) is measured again every
``--baseline-every`` points, so the file carries the process-to-process noise measured across the
whole run, not assumed. ``--replicates 2`` measures every point twice (in a second shuffled pass).

The file holds the machine (as ``tuner.base.host`` sees it), the date, the load average before and
after, the measurement settings, and per point the throughput of each process and its wall time.
``benchmarks/replay.py`` replays search strategies on such files.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tuner import config as config_mod  # noqa: E402
from tuner.base import host  # noqa: E402
from tuner.knobs import space as space_mod  # noqa: E402
from tuner.search import measuring  # noqa: E402

DIMS = ("instances", "allocator", "intra_op_parallelism_threads", "inter_op_parallelism_threads")


def grid_points(space: space_mod.Space, allocators: list[str]) -> list[dict]:
    """The grid's points: the searched candidates of the layout and thread knobs."""
    values = {name: list(space.searched.get(name, [space.fixed.get(name)])) for name in DIMS}
    values["allocator"] = [a for a in values["allocator"] if a in allocators] or ["system"]
    return [dict(zip(DIMS, combo, strict=True)) for combo in itertools.product(
        *(values[name] for name in DIMS))]


def point_key(point: dict) -> str:
    return json.dumps({name: point[name] for name in DIMS}, sort_keys=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--out", required=True)
    ap.add_argument("--allocators", default="system,tcmalloc",
                    help="allocators to include (default: system,tcmalloc)")
    ap.add_argument("--replicates", type=int, default=1)
    ap.add_argument("--baseline-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=float, help="window seconds (default: the config's)")
    ap.add_argument("--windows", type=int)
    ap.add_argument("--warmup", type=float)
    args = ap.parse_args()

    cfg = config_mod.load(args.config)
    measure = cfg.measure
    changes = {k: v for k, v in (("window_seconds", args.window), ("windows", args.windows),
                                 ("warmup_seconds", args.warmup)) if v is not None}
    if changes:
        cfg = dataclasses.replace(cfg, measure=dataclasses.replace(measure, **changes))
    machine = host.detect()
    measurer = measuring.Measurer(cfg, machine, lambda line: print("  " + line, flush=True))
    pre = measurer.preflight()
    space = pre.space
    points = grid_points(space, args.allocators.split(","))
    baseline = {**space.baseline(), **{name: space.baseline()[name] for name in DIMS}}
    base_key = point_key(baseline)
    rng = random.Random(args.seed)
    order: list[dict] = []
    for _ in range(args.replicates):
        one = list(points)
        rng.shuffle(one)
        order += one
    # the baseline again every few points: the noise across the whole run
    schedule: list[dict] = []
    for i, point in enumerate(order):
        if i % args.baseline_every == 0:
            schedule.append(baseline)
        schedule.append(point)
    schedule.append(baseline)

    started = time.time()
    load_before = os.getloadavg()
    measured: dict[str, dict] = {}
    for i, point in enumerate(schedule, 1):
        settings = {**space.baseline(), **point}
        t0 = time.monotonic()
        result = measuring.summary(measurer.measure(settings))
        wall = time.monotonic() - t0
        key = point_key(point)
        row = measured.setdefault(key, {"point": {n: point[n] for n in DIMS},
                                        "throughput": [], "rel_spread": [],
                                        "wall_seconds": []})
        row["throughput"].append(round(result["throughput"]["median"], 2))
        row["rel_spread"].append(round(result["throughput"]["rel_spread"], 4))
        row["wall_seconds"].append(round(wall, 2))
        print(f"[{i}/{len(schedule)}] {key}: {result['throughput']['median']:.1f} samples/s "
              f"({wall:.1f} s)", flush=True)

    out = {
        "format": "tuner-grid/1",
        "example": Path(args.config).stem,
        "date": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        # as tuner.base.host.Machine (replay rebuilds it), without the host name
        "machine": {k: v for k, v in dataclasses.asdict(pre.machine).items() if k != "hostname"},
        "platform": platform.platform(),
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "measure": dataclasses.asdict(cfg.measure),
        "dims": list(DIMS),
        "space": {name: space.searched.get(name) for name in DIMS},
        "baseline": base_key,
        "points": list(measured.values()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}: {len(measured)} points, {len(schedule)} processes, "
          f"{out['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
