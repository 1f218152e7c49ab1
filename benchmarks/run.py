"""tuner's own evidence: tuned vs defaults vs expert rule, search efficiency, overhead, agreement.

    python benchmarks/run.py --quick     # about 14 minutes on 2 cores
    python benchmarks/run.py             # the thorough version (about an hour on 2 cores)

Prints four tables and writes everything it measured to results/benchmarks/<timestamp>.json:

1. Tuned vs defaults vs expert rule, for every example in configs/: a real search per example,
   then each configuration re-measured in fresh processes, interleaved rounds (order rotated),
   median with a bootstrap 95% interval. The tuned configuration is applied through the public
   ``tuner.apply()`` path, as production would (see benchmarks/remeasure.py).
2. Search efficiency on one example: every point of a reduced space (intra x inter threads) is
   measured once in a fresh process: the ground truth (quick mode: powers of two only; points
   the example's comparison search already measured with the same settings are taken from it).
   Then searches with different seeds are replayed on those measurements for each sampler,
   counting the trials each needs to reach 98% of the grid optimum (the baseline and expert
   trials come first, as in a real search).
3. Overhead: each trial's wall time split into start-up and import, model build, data build,
   warm-up and measurement; the share spent measuring; the time to a tuned file.
4. Agreement: the speedup each search reported vs the speedup re-measured in (1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from remeasure import bootstrap, run_one  # noqa: E402

from tuner import config as config_mod  # noqa: E402
from tuner import knobs as knobs_mod  # noqa: E402
from tuner.base import host  # noqa: E402
from tuner.knobs import settings as settings_mod  # noqa: E402
from tuner.knobs import space as space_mod  # noqa: E402
from tuner.search import measuring, sampling  # noqa: E402
from tuner.search import pipeline as search_mod  # noqa: E402

# Quick mode fits four examples and the grid in under 15 minutes on 2 cores. Every measurement is
# a fresh process costing ~3 s before its first window (interpreter, TensorFlow import, build,
# tracing, warm-up), so the budget is a count of processes: 10 trials and 4 final rounds per
# search (the fewest with which the permutation test can reach p < 0.05), no screening round
# between two candidates (the best trial goes straight to the final rounds), three interleaved
# re-measurement rounds per example and a 4 x 4 grid. Trial windows stay long enough that
# measuring is over half of each trial. The full mode is the thorough version.
QUICK = {"n_trials": 10, "warmup": 1.5, "window": 0.9, "windows": 4, "candidates": 1,
         "screen_rounds": 1, "rounds": 4, "remeasure_rounds": 3, "remeasure_seconds": 3.0,
         "remeasure_warmup": 0.8, "seeds": 10, "efficiency_example": "branchy",
         "grid": "reduced"}
FULL = {"n_trials": 24, "warmup": 3.0, "window": 2.0, "windows": 5, "candidates": 3,
        "screen_rounds": 2, "rounds": 5, "remeasure_rounds": 8, "remeasure_seconds": 8.0,
        "remeasure_warmup": 2.0, "seeds": 30, "efficiency_example": "branchy", "grid": "ladder"}


def bench_config(path: Path, mode: dict, stamp: str, out: Path) -> config_mod.Config:
    cfg = config_mod.load(path)
    name = f"bench-{path.stem}-{stamp}"
    cfg = cfg.replace(
        search=config_mod.Search(n_trials=mode["n_trials"], trial_timeout=300, seed=0),
        measure=config_mod.Measure(warmup_seconds=mode["warmup"], window_seconds=mode["window"],
                                   windows=mode["windows"]),
        validate=config_mod.Validate(candidates=mode["candidates"],
                                     screen_rounds=mode["screen_rounds"], rounds=mode["rounds"]),
        study_name=name, storage=f"sqlite:///{out}/studies.db",
        output=str(out / path.stem / f"tuned-{stamp}.yaml"))
    return cfg


def compare_example(path: Path, mode: dict, stamp: str, out: Path, log) -> dict:
    cfg = bench_config(path, mode, stamp, out)
    log(f"== {path.stem}: search ({mode['n_trials']} trials) ==")
    t0 = time.monotonic()
    outcome = search_mod.run(cfg, lambda line: log("   " + line))
    search_seconds = time.monotonic() - t0
    doc = outcome.tuned
    tuned_path = str(Path(outcome.tuned_path).resolve())
    wl = doc["workload"]
    common = {"base_dir": str(Path(wl["config"]).parent), "model": wl["model"], "data": wl["data"],
              "mode": wl["mode"], "seconds": mode["remeasure_seconds"],
              "warmup": mode["remeasure_warmup"]}
    expert = doc["search"]["expert_rule"]["settings"]
    defaults = settings_mod.nest(knobs_mod.default_settings())
    entries = [("defaults", {"settings": defaults, "apply": None}),
               ("tuned", {"settings": doc["settings"], "apply": tuned_path}),
               ("expert", {"settings": expert, "apply": None})]
    runs: dict[str, list[float]] = {name: [] for name, _ in entries}
    t1 = time.monotonic()
    log(f"== {path.stem}: re-measure defaults / tuned (tuner.apply) / expert, "
        f"{mode['remeasure_rounds']} interleaved rounds ==")
    for r in range(mode["remeasure_rounds"]):
        shift = r % len(entries)
        for name, extra in entries[shift:] + entries[:shift]:
            runs[name].append(run_one({**common, **extra}))
        log(f"   round {r + 1}: " + "  ".join(f"{n} {runs[n][-1]:.1f}" for n, _ in entries))
    remeasure_seconds = time.monotonic() - t1
    base = statistics.median(runs["defaults"])
    summary = {}
    for name, values in runs.items():
        lo, hi = bootstrap(values)
        summary[name] = {"median": statistics.median(values), "ci95": [lo, hi], "runs": values,
                         "vs_defaults": statistics.median(values) / base}
    trials = optuna.load_study(study_name=cfg.study_name, storage=cfg.storage).get_trials()
    return {"example": path.stem, "verdict": doc["verdict"], "settings": doc["settings"],
            "reported_speedup": doc["result"]["speedup"],
            "reported_ci95": doc["result"]["speedup_ci95"],
            "remeasured": summary, "search_seconds": search_seconds,
            "remeasure_seconds": remeasure_seconds, "study": cfg.study_name,
            "phases": doc["search"].get("seconds", {}),
            "overhead": overhead(trials, mode["warmup"]),
            "validation_rounds": doc["validation"].get("rounds"), "tuned_file": tuned_path}


def overhead(trials, warmup_cap: float) -> dict:
    parts = ("startup", "import", "build_model", "build_data", "warmup", "measure")
    done = [t for t in trials if t.state == TrialState.COMPLETE and "timings" in t.user_attrs]
    if not done:
        return {}
    mean = {p: statistics.mean(t.user_attrs["timings"].get(p, 0.0) for t in done) for p in parts}
    total = statistics.mean(t.user_attrs["timings"]["total"] for t in done)
    mean["other"] = max(0.0, total - sum(mean.values()))
    mean["total"] = total
    mean["measuring_share"] = mean["measure"] / total
    # warm-up ended on its own (rate settled) rather than at its cap
    mean["warmup_settled"] = statistics.mean(
        t.user_attrs["timings"].get("warmup", warmup_cap) < 0.97 * warmup_cap for t in done)
    return mean


def efficiency(path: Path, mode: dict, stamp: str, out: Path, log,
               reuse_study: str | None = None) -> dict:
    """The ground-truth grid, then the samplers replayed on it. ``reuse_study`` is the same
    example's comparison study (same measurement settings, same machine, minutes earlier): its
    trials whose settings are exactly a grid point (the baseline and the expert rule) count as
    that point's measurement instead of being measured again."""
    cfg = bench_config(path, mode, stamp, out)
    m = host.detect()
    # grid points are plain thread settings: no preflight needed
    measurer = measuring.Measurer(cfg, m, lambda line: log("   " + line))
    ladder = knobs_mod.thread_ladder(m.usable_cpus)
    if mode["grid"] == "reduced":  # powers of two only
        ladder = [v for v in ladder if v & (v - 1) == 0]
    intra = [0, *ladder]
    inter = knobs_mod.KNOBS["inter_op_parallelism_threads"].candidates(m)
    points = {(a, b): dict(space_mod.default_settings(), intra_op_parallelism_threads=a,
                           inter_op_parallelism_threads=b) for a in intra for b in inter}
    known: dict[tuple[int, int], float] = {}
    if reuse_study:
        for t in optuna.load_study(study_name=reuse_study, storage=cfg.storage).get_trials(
                deepcopy=False, states=(TrialState.COMPLETE,)):
            for point, settings in points.items():
                if t.user_attrs.get("settings") == settings:
                    known[point] = t.user_attrs["throughput"]["median"]
    log(f"== {path.stem}: ground truth, {len(points)} grid points "
        f"(intra {intra} x inter {inter}), one fresh process each; {len(known)} taken from the "
        f"comparison search's trials ==")
    grid: dict[tuple[int, int], float] = {}
    for (a, b), settings in points.items():
        if (a, b) in known:
            grid[(a, b)] = known[(a, b)]
            log(f"   intra={a} inter={b}: {grid[(a, b)]:.1f} samples/s (search trial)")
            continue
        grid[(a, b)] = measuring.summary(measurer.measure(settings))["throughput"]["median"]
        log(f"   intra={a} inter={b}: {grid[(a, b)]:.1f} samples/s")
    best = max(grid.values())
    target = 0.98 * best
    expert = space_mod.expert_settings(m)
    refs = [(0, 0),
            (expert["intra_op_parallelism_threads"], expert["inter_op_parallelism_threads"])]
    space = {"intra_op_parallelism_threads": intra, "inter_op_parallelism_threads": inter}
    cap = 40

    def samplers(seed: int) -> dict:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {
                "tuner default (auto)": optuna.samplers.GridSampler(space, seed=seed)
                if len(grid) + 2 <= 24 else None,
                "tpe + thread screening (tuner's TPE mode)": optuna.samplers.TPESampler(
                    seed=seed, multivariate=True, group=True, n_startup_trials=8),
                "tpe (as tuner sets it, no screening)": optuna.samplers.TPESampler(
                    seed=seed, multivariate=True, group=True, n_startup_trials=8),
                "tpe (Optuna defaults)": optuna.samplers.TPESampler(seed=seed),
                "random": optuna.samplers.RandomSampler(seed=seed),
            }

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    needed: dict[str, list[int]] = {}
    for seed in range(mode["seeds"]):
        for name, sampler in samplers(seed).items():
            if sampler is None:
                continue
            s = optuna.create_study(direction="maximize", sampler=sampler)
            for ref in refs:
                s.enqueue_trial({"intra_op_parallelism_threads": ref[0],
                                 "inter_op_parallelism_threads": ref[1]})
            if "screening" in name and "no screening" not in name:
                for point in sampling.screening_points(space_mod.Space(space, {}), m):
                    s.enqueue_trial(point)
            hit = None
            for n in range(1, cap + 1):
                t = s.ask()
                point = tuple(t.suggest_categorical(k, v) for k, v in space.items())
                if grid[point] >= target:  # before tell: the grid sampler stops when exhausted
                    hit = n
                    break
                s.tell(t, grid[point])
            needed.setdefault(name, []).append(hit if hit is not None else cap + 1)
    result = {"example": path.stem, "grid": {f"{a},{b}": v for (a, b), v in grid.items()},
              "from_search": [f"{a},{b}" for a, b in known],
              "optimum": best, "optimum_at": max(grid, key=grid.get), "seeds": mode["seeds"],
              "trials_to_98pct": {k: {"median": statistics.median(v), "runs": v,
                                      "p90": sorted(v)[int(0.9 * (len(v) - 1))]}
                                  for k, v in needed.items()}}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="tuner's benchmarks")
    parser.add_argument("--quick", action="store_true",
                        help="small budgets: about 14 minutes on 2 cores")
    parser.add_argument("--configs", nargs="*", help="configs to compare (default configs/*.yaml)")
    parser.add_argument("--skip-efficiency", action="store_true")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = ROOT / "results" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(line: str) -> None:
        log_lines.append(line)
        print(line, flush=True)

    configs = [Path(c) for c in args.configs] if args.configs else sorted(
        (ROOT / "configs").glob("*.yaml"))
    started = time.monotonic()
    comparisons = [compare_example(c, mode, stamp, out, log) for c in configs]
    eff = None
    if not args.skip_efficiency:
        t0 = time.monotonic()
        example = ROOT / "configs" / f"{mode['efficiency_example']}.yaml"
        same = next((c["study"] for c in comparisons if c["example"] == example.stem), None)
        eff = efficiency(example, mode, stamp, out, log, same)
        eff["seconds"] = time.monotonic() - t0
    machine = host.detect()
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "mode": "quick" if args.quick else "full", "settings": mode,
              "machine": {"cpu_model": machine.cpu_model, "usable_cpus": machine.usable_cpus,
                          "tf_version": host.installed_tf_version(),
                          "python": platform.python_version()},
              "comparisons": comparisons, "efficiency": eff,
              "wall_seconds": time.monotonic() - started}
    path = out / f"{stamp}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print()
    print(render(report))
    print(f"\nwrote {path.relative_to(ROOT)}")


def render(report: dict) -> str:
    m = report["machine"]
    lines = [f"machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, TensorFlow "
             f"{m['tf_version']}, Python {m['python']}; {report['date']}; mode {report['mode']}",
             "",
             "1. Tuned vs defaults vs expert rule (fresh processes, interleaved; median samples/s "
             "[95% CI]; tuned applied with tuner.apply())",
             "",
             "| example | verdict | defaults | tuned | expert rule | tuned / defaults | "
             "expert / defaults |",
             "|---|---|---|---|---|---|---|"]
    for c in report["comparisons"]:
        r = c["remeasured"]

        def cell(name: str, r: dict = r) -> str:
            return f"{r[name]['median']:.0f} [{r[name]['ci95'][0]:.0f}-{r[name]['ci95'][1]:.0f}]"

        lines.append(f"| {c['example']} | {c['verdict']} | {cell('defaults')} | {cell('tuned')} | "
                     f"{cell('expert')} | {r['tuned']['vs_defaults']:.3f}x | "
                     f"{r['expert']['vs_defaults']:.3f}x |")
    eff = report.get("efficiency")
    if eff:
        lines += ["", f"2. Search efficiency on {eff['example']}: trials to reach 98% of the grid "
                      f"optimum ({eff['optimum']:.0f} samples/s at intra,inter="
                      f"{eff['optimum_at'][0]},{eff['optimum_at'][1]}; {len(eff['grid'])} points "
                      f"measured once each, {len(eff.get('from_search', []))} of them by the "
                      f"comparison search), replayed over {eff['seeds']} seeds",
                  "", "| sampler | median trials | 90th percentile |", "|---|---|---|"]
        for name, v in eff["trials_to_98pct"].items():
            lines.append(f"| {name} | {v['median']:g} | {v['p90']:g} |")
    lines += ["", "3. Overhead per trial (mean seconds), and where the time to a tuned file goes",
              "",
              "| example | start-up | import | build model | build data | warm-up | measure | "
              "other | total | measuring share | warm-up settled | preflight | trials | validation "
              "(final rounds) | to tuned file |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in report["comparisons"]:
        o = c["overhead"]
        lines.append(f"| {c['example']} | " + " | ".join(
            f"{o.get(k, 0):.1f}" for k in ("startup", "import", "build_model", "build_data",
                                           "warmup", "measure", "other", "total"))
            + f" | {o.get('measuring_share', 0):.0%} | {o.get('warmup_settled', 0):.0%} | "
            + " | ".join(f"{c['phases'].get(k, 0):.0f} s" for k in ("preflight", "trials"))
            + f" | {c['phases'].get('validation', 0):.0f} s ({c.get('validation_rounds')})"
            + f" | {c['search_seconds'] / 60:.1f} min |")
    searches = sum(c["search_seconds"] for c in report["comparisons"])
    remeasures = sum(c.get("remeasure_seconds", 0.0) for c in report["comparisons"])
    grid = (eff or {}).get("seconds", 0.0)
    lines += ["", f"This run: {report['wall_seconds'] / 60:.1f} min in all; searches "
                  f"{searches / 60:.1f} min, re-measurements {remeasures / 60:.1f} min, grid "
                  f"{grid / 60:.1f} min."]
    lines += ["", "4. Agreement: speedup reported by the search vs re-measured", "",
              "| example | reported | re-measured | difference |", "|---|---|---|---|"]
    for c in report["comparisons"]:
        measured = c["remeasured"]["tuned"]["vs_defaults"]
        lines.append(f"| {c['example']} | {c['reported_speedup']:.3f}x | {measured:.3f}x | "
                     f"{100 * (c['reported_speedup'] / measured - 1):+.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
