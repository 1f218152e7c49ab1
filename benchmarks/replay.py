"""Replay search strategies on recorded grids: how many trials, and how much wall time, each needs
to find a configuration within 95% of the grid's optimum, and how good the one it picks is.

    python benchmarks/replay.py benchmarks/data/*.json --seeds 10 --budget 24

A grid (written by ``benchmarks/grid.py``) holds every point of process layout x allocator x
intra-op x inter-op threads measured in fresh processes, with the baseline measured many times
across the run. The replay takes each point's mean as its true speed and draws every simulated
measurement as that mean times a ratio drawn from the baseline's own process-to-process spread
(so a strategy sees noise as large as the machine's), and its cost as the wall time recorded for
that point (a duplicate returned without measuring costs nothing, as in the tool).

Strategies, all with the tuner's two reference trials first (TensorFlow's defaults, the expert
rule) and the tuner's duplicate skipping:

- ``structured``: ``search.sampler: structured`` (tuner.search.structured.StructuredSampler)
- ``tpe``: the tuner's TPE mode (its TPE settings and screening points, tuner.search.sampling)
- ``random``: Optuna's RandomSampler
- ``gp``: Optuna's GPSampler (needs torch and scipy; skipped when they are missing)

Per strategy: trials until a point >= 95% of the optimum was measured (median, 90th percentile,
how many seeds reached it within the budget), the wall time until then, and the true speed of the
configuration the strategy would pick at the end of the budget (the structured search's
parsimonious leader unless that is the baseline; otherwise the best measured trial, as the
tuner's validation takes it), as a share of the optimum.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tuner.base import host  # noqa: E402
from tuner.knobs import KNOBS  # noqa: E402
from tuner.knobs import space as space_mod  # noqa: E402
from tuner.search import (  # noqa: E402
    sampling,
    structured,  # noqa: E402
)

TARGET = 0.95


class Grid:
    def __init__(self, path: Path) -> None:
        doc = json.loads(path.read_text())
        self.name = path.stem
        self.doc = doc
        self.dims = doc["dims"]
        machine = dict(doc["machine"], hostname="replay")
        machine["affinity"] = tuple(machine["affinity"])
        self.machine = host.Machine(**machine)
        self.truth: dict[str, float] = {}
        self.cost: dict[str, float] = {}
        self.spread: dict[str, float] = {}
        for row in doc["points"]:
            key = self.key(row["point"])
            self.truth[key] = statistics.mean(row["throughput"])
            self.cost[key] = statistics.mean(row["wall_seconds"])
            self.spread[key] = statistics.median(row["rel_spread"])
        base = next(r for r in doc["points"] if self.key(r["point"]) == doc["baseline"]
                    or json.dumps(r["point"], sort_keys=True) == doc["baseline"])
        mean = statistics.mean(base["throughput"])
        self.ratios = [v / mean for v in base["throughput"]]
        self.baseline_runs = len(base["throughput"])
        self.optimum = max(self.truth.values())
        self.optimum_at = max(self.truth, key=self.truth.get)
        # the space the tuner would search here, narrowed to the grid's dimensions
        overrides: dict[str, Any] = {name: "default" for name in KNOBS if name not in self.dims}
        overrides["allocator"] = sorted({r["point"]["allocator"] for r in doc["points"]})
        self.space = space_mod.build_space(self.machine, overrides)

    def key(self, settings: dict[str, Any]) -> str:
        return json.dumps({d: settings[d] for d in self.dims}, sort_keys=True)

    def draw(self, key: str, rng: random.Random) -> float:
        return self.truth[key] * rng.choice(self.ratios)


def config_for(n_trials: int, sampler: str, seed: int) -> Any:
    """The few config fields tuner.search.sampling reads."""
    from tuner.config import Config, Objective, Search
    cfg = Config.__new__(Config)
    object.__setattr__(cfg, "search", Search(n_trials=n_trials, sampler=sampler, seed=seed))
    object.__setattr__(cfg, "objective", Objective())
    return cfg


def run_one(grid: Grid, strategy: str, seed: int, budget: int) -> dict[str, Any]:
    rng = random.Random(f"{grid.name}|{strategy}|{seed}")
    space, machine = grid.space, grid.machine
    sspace = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if strategy == "structured":
            sspace = structured.StructuredSpace(space, machine)
            sampler = structured.StructuredSampler(
                sspace, seed=seed,
                replicates=2 if budget >= sampling.REPLICATES_FROM else 1)
            sampler.end = budget
        elif strategy == "tpe":
            sampler, _ = sampling.sampler(config_for(budget, "tpe", seed), space,
                                          machine=machine)
        elif strategy == "random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        else:
            sampler = optuna.samplers.GPSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    params_space = sspace.params if sspace else space.searched
    for role, settings in (("baseline", space.baseline()), ("expert", space.expert(machine))):
        params = (sspace.params_of(settings) if sspace
                  else {n: settings[n] for n in space.searched})
        study.enqueue_trial(params, user_attrs={"role": role,
                                                **({"phase": "reference"} if sspace else {})})
    if strategy == "tpe":
        for params in sampling.screening_for(config_for(budget, "tpe", seed), space, machine):
            study.enqueue_trial(params, user_attrs={"role": "screen"})
    measured: dict[str, list[float]] = {}
    spent, hit, hit_seconds = 0.0, None, None
    for n in range(1, budget + 1):
        trial = study.ask()
        role = trial.user_attrs.get("role")
        sampled = {name: trial.suggest_categorical(name, list(choices))
                   for name, choices in params_space.items()}
        if role == "baseline":
            settings = space.baseline()
        elif role == "expert":
            settings = space.expert(machine)
        else:
            settings = sspace.settings(sampled) if sspace else space.settings(sampled)
        if sspace is not None and trial.number in sampler.steps:
            step = sampler.steps.pop(trial.number)
            trial.set_user_attr("phase", step.phase)
            if step.role:
                role = step.role
                trial.set_user_attr("role", role)
        key = grid.key(settings)
        trial.set_user_attr("settings", settings)
        if role not in ("baseline", "expert", structured.REPLICATE) and key in measured:
            trial.set_user_attr("duplicate_of", -1)
            trial.set_user_attr("throughput", {"median": measured[key][0],
                                               "rel_spread": grid.spread[key]})
            study.tell(trial, measured[key][0])
            continue
        value = grid.draw(key, rng)
        spent += grid.cost[key]
        measured.setdefault(key, []).append(value)
        trial.set_user_attr("throughput", {"median": value, "rel_spread": grid.spread[key]})
        study.tell(trial, value)
        if hit is None and grid.truth[key] >= TARGET * grid.optimum:
            hit, hit_seconds = n, spent
    leader = sampler.leader(study) if sspace is not None else None
    if leader is not None and leader.user_attrs["settings"] != space.baseline():
        pick = grid.key(leader.user_attrs["settings"])
    else:   # as the tool's validation: the parsimonious leader, else the best measured trials
        best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
        pick = grid.key(best.user_attrs["settings"])
    return {"hit": hit, "hit_seconds": hit_seconds, "seconds": spent,
            "picked": grid.truth[pick] / grid.optimum if pick else 0.0}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("grids", nargs="+")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=24, help="trials per search (default 24)")
    ap.add_argument("--strategies", default="structured,tpe,random,gp")
    ap.add_argument("--json", help="also write the raw runs here")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    strategies = args.strategies.split(",")
    if "gp" in strategies:
        try:
            import scipy  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            print("gp: skipped (GPSampler needs torch and scipy)")
            strategies.remove("gp")
    raw: dict[str, Any] = {}
    for path in args.grids:
        grid = Grid(Path(path))
        doc = grid.doc
        print(f"\n## {grid.name}: {len(grid.truth)} points, recorded {doc['date']} on "
              f"{doc['machine']['cpu_model']} ({doc['machine']['usable_cpus']} CPUs), load "
              f"{doc['load_average']['before'][0]}->{doc['load_average']['after'][0]}")
        base = json.loads(doc["baseline"])
        print(f"optimum {grid.optimum:.0f} samples/s at {grid.optimum_at}, "
              f"{grid.optimum / grid.truth[grid.key(base)]:.2f}x the defaults; baseline "
              f"measured {grid.baseline_runs} times, spread "
              f"{min(grid.ratios):.2f}-{max(grid.ratios):.2f} of its mean")
        near = sum(v >= TARGET * grid.optimum for v in grid.truth.values())
        print(f"budget {args.budget} trials, {args.seeds} seeds; target {TARGET:.0%} of the "
              f"optimum, met by {near} of the {len(grid.truth)} points\n")
        print("| strategy | reached (seeds) | trials to reach, median [p90] | wall s to reach, "
              "median | picked at budget, median [worst] | picked >= 95% |")
        print("|---|---|---|---|---|---|")
        for strategy in strategies:
            runs = [run_one(grid, strategy, seed, args.budget) for seed in range(args.seeds)]
            raw.setdefault(grid.name, {})[strategy] = runs
            hits = [r["hit"] if r["hit"] is not None else args.budget + 1 for r in runs]
            secs = [r["hit_seconds"] for r in runs if r["hit_seconds"] is not None]
            picked = [r["picked"] for r in runs]
            over = "+" if pct(hits, 0.9) > args.budget else ""
            reach = f"{statistics.median(secs):.0f}" if secs else "-"
            print(f"| {strategy} | {sum(r['hit'] is not None for r in runs)}/{len(runs)} | "
                  f"{statistics.median(hits):g} [{min(pct(hits, 0.9), args.budget)}{over}] | "
                  f"{reach} | {statistics.median(picked):.1%} [{min(picked):.1%}] | "
                  f"{sum(p >= TARGET for p in picked)}/{len(picked)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
