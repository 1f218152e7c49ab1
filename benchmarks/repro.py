"""Reproducibility: the same search with different seeds, each verdict re-measured side by side.

    python benchmarks/repro.py configs/quickstart.yaml configs/branchy.yaml --seeds 1,2,3

For each config and seed, runs ``python -m tuner search --config CONFIG --seed SEED`` as a user
would (the config's own budget, its own study in a fresh SQLite file under ``--out``), timing it
end to end. Then every distinct tuned configuration of that config and TensorFlow's defaults are
re-measured together in fresh processes, interleaved with the order rotated each round
(benchmarks/remeasure.py's child: the tuned file applied through ``python -m tuner run`` and
``tuner.apply()``, as production would). Prints one table per config:

- the wall time of each search and the measuring share of its trials (measurement over the
  child's whole wall time);
- its verdict, the knobs it changed and the speedup it reported;
- the re-measured speedup over the defaults (the ratio of the medians of the rounds, and its
  bootstrap 95% interval resampling both the tuned runs and the defaults' runs: tuner's own
  ``stats.ratio_ci``), and the share of the best re-measured configuration it reached;

and the spread of the re-measured speedups across seeds. Everything measured is written to
``OUT/repro.json``; ``--tables OUT/repro.json ...`` prints the tables again from such files,
without measuring (docs/benchmarks.md's tables come from benchmarks/data/repro/ this way).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from remeasure import run_one  # noqa: E402
from run import overhead  # noqa: E402

from tuner.base import stats  # noqa: E402
from tuner.knobs import settings as settings_mod  # noqa: E402

DEFAULTS = {"intra_op_parallelism_threads": 0, "inter_op_parallelism_threads": 0,
            "tf_data": {}, "env": {}}


def search(config: Path, seed: int, out: Path, log, extra: tuple[str, ...] = (),
           tag: str = "") -> dict:
    name = f"{config.stem}{tag}-s{seed}"
    storage = f"sqlite:///{out / (name + '.db')}"
    tuned = out / name / "tuned.yaml"
    cmd = [sys.executable, "-m", "tuner", "search", "--config", str(config), "--seed", str(seed),
           "--storage", storage, "--study-name", name, "--output", str(tuned), *extra]
    log(f"== {name}: {' '.join(cmd[1:])}")
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    with open(out / f"{name}.log", "w") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    wall = time.monotonic() - t0
    if code != 0:
        raise SystemExit(f"{name}: search exited {code}; see {out / (name + '.log')}")
    doc = yaml.safe_load(tuned.read_text())
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    cost = overhead(trials, (doc["search"].get("measure") or {}).get("warmup_seconds", 3.0))
    result = doc.get("result") or {}
    log(f"   {wall:.0f} s, verdict {doc['verdict']}, reported {result.get('speedup', 1.0):.3f}x, "
        f"{settings_mod.short(settings_mod.flatten(doc['settings']))}")
    return {"seed": seed, "wall_s": wall, "load_at_start": load, "tuned": str(tuned),
            "verdict": doc["verdict"], "settings": doc["settings"],
            "label": settings_mod.short(settings_mod.flatten(doc["settings"])),
            "carried_by": result.get("carried_by"),
            "reported": result.get("speedup", 1.0), "trials": len(trials),
            "measuring_share": cost.get("measuring_share"),
            "phases_s": doc["search"].get("seconds", {}),
            "validation_rounds": (doc.get("validation") or {}).get("rounds")}


def remeasure(runs: list[dict], rounds: int, seconds: float, warmup: float, log) -> dict:
    """Defaults and each distinct tuned configuration, interleaved, order rotated."""
    first = yaml.safe_load(Path(runs[0]["tuned"]).read_text())["workload"]
    common = {"base_dir": str(Path(first["config"]).parent), "model": first["model"],
              "data": first["data"], "mode": first["mode"], "seconds": seconds,
              "warmup": warmup}
    entries = {"defaults": {"settings": DEFAULTS, "apply": None}}
    for r in runs:
        key = json.dumps(r["settings"], sort_keys=True)
        if r["verdict"] == "tuned" and key not in {json.dumps(e["settings"], sort_keys=True)
                                                   for e in entries.values()}:
            entries[f"seed {r['seed']}"] = {"settings": r["settings"], "apply": r["tuned"]}
    values: dict[str, list[float]] = {name: [] for name in entries}
    names = list(entries)
    for i in range(rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            values[name].append(run_one({**common, **entries[name]}))
        log(f"   round {i + 1}/{rounds}: " + "  ".join(f"{n} {values[n][-1]:.1f}" for n in names))
    out = intervals({name: {"runs": vals} for name, vals in values.items()})
    for r in runs:   # which measured entry stands for each seed's verdict
        key = json.dumps(r["settings"], sort_keys=True)
        r["remeasured_as"] = next((n for n, e in entries.items() if r["verdict"] == "tuned"
                                   and json.dumps(e["settings"], sort_keys=True) == key),
                                  "defaults")
    return out


def intervals(measured: dict) -> dict:
    """Each entry's median, speedup over the defaults' median and its 95% interval, from the
    runs: the bootstrap resamples the entry's runs and the defaults' runs alike (the defaults
    are measured as noisily as the tuned file; holding their median fixed would understate the
    interval)."""
    base_runs = measured["defaults"]["runs"]
    base = statistics.median(base_runs)
    out = {}
    for name, entry in measured.items():
        vals = entry["runs"]
        lo, hi = stats.ratio_ci(vals, base_runs)
        out[name] = {"runs": vals, "median": statistics.median(vals),
                     "speedup": statistics.median(vals) / base, "ci95": [lo, hi]}
    return out


def table(config: str, runs: list[dict], measured: dict) -> str:
    best = max(m["speedup"] for m in measured.values())
    lines = [f"### {config}", "",
             "| seed | wall | trials | measuring share | verdict | changed | reported | "
             "re-measured [95% CI] | of the best re-measured |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        m = measured[r["remeasured_as"]]
        share = r["measuring_share"]
        lines.append(
            f"| {r['seed']} | {r['wall_s']:.0f} s | {r['trials']} | "
            f"{'-' if share is None else f'{100 * share:.0f}%'} | {r['verdict']} | "
            f"{', '.join(r['carried_by'] or []) or r['label'] if r['verdict'] == 'tuned' else '-'}"
            f" | {r['reported']:.3f}x | {m['speedup']:.3f}x "
            f"[{m['ci95'][0]:.3f}-{m['ci95'][1]:.3f}] | {100 * m['speedup'] / best:.1f}% |")
    speeds = [measured[r["remeasured_as"]]["speedup"] for r in runs]
    lines += ["", f"Re-measured speedups across seeds: {min(speeds):.3f}x-{max(speeds):.3f}x "
              f"(max/min {max(speeds) / min(speeds):.3f}); wall time "
              f"{min(r['wall_s'] for r in runs):.0f}-{max(r['wall_s'] for r in runs):.0f} s. "
              "Re-measured, defaults: " + ", ".join(
                  f"{n} {m['median']:.1f}" for n, m in measured.items()) + " samples/s.", ""]
    return "\n".join(lines)


def tables(paths: list[Path]) -> str:
    """The tables of recorded runs (``repro.json`` files), intervals computed again from the
    runs they hold."""
    out = []
    for path in paths:
        report = json.loads(path.read_text())
        out.append(f"## {path.name} ({report['date']}, {report['machine']['cpus']} CPUs)\n")
        for config, example in report["examples"].items():
            out.append(table(config, example["runs"], intervals(example["remeasured"])))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", type=Path)
    ap.add_argument("--tables", nargs="+", type=Path, metavar="REPRO.json",
                    help="print the tables of recorded runs instead of measuring")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--rounds", type=int, default=5, help="re-measurement rounds")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per process")
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--search-arg", action="append", default=[], metavar="ARG",
                    help="passed on to every search (repeat it: --search-arg=--accuracy-tolerance "
                         "--search-arg=0.05)")
    ap.add_argument("--tag", default="", help="appended to each study's name (-tol)")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "results" / f"repro-{dt.datetime.now():%Y%m%d-%H%M%S}")
    args = ap.parse_args()
    if args.tables:
        print(tables(args.tables))
        return
    if not args.configs:
        ap.error("give configs to measure, or --tables REPRO.json")
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]

    def log(line: str) -> None:
        print(line, flush=True)

    report = {"date": dt.datetime.now().isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                          "python": platform.python_version()},
              "load_before": os.getloadavg(), "search_args": args.search_arg, "examples": {}}
    for config in args.configs:
        runs = [search(config.resolve(), seed, args.out, log, tuple(args.search_arg), args.tag)
                for seed in seeds]
        log(f"== {config.stem}: re-measuring ({args.rounds} rounds of {args.seconds} s)")
        measured = remeasure(runs, args.rounds, args.seconds, args.warmup, log)
        report["examples"][config.stem] = {"runs": runs, "remeasured": measured}
        (args.out / "repro.json").write_text(json.dumps(report, indent=1, default=str))
        print()
        print(table(config.stem, runs, measured), flush=True)
    report["load_after"] = os.getloadavg()
    (args.out / "repro.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
