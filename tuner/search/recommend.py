"""The recommendation of ``size``: the cost per million samples of each size, and the size and
replica count that reach a target throughput with the fewest CPUs within the latency budget."""

from __future__ import annotations

import math
from typing import Any


def cost_per_million(cpus: int, throughput: float, price: float) -> float:
    """What a million samples cost on one process of ``cpus`` CPUs at ``price`` per CPU-hour."""
    return cpus * price * 1e6 / (3600.0 * throughput)


def recommend(rows: list[dict[str, Any]], *, target: float | None = None,
              price: float | None = None, budget: float | None = None) -> dict[str, Any]:
    """The sizes file's ``recommendation``: which sizes a latency ``budget`` (p95 step latency,
    ms) excludes; the most efficient size per CPU and the fastest single process; with a
    ``target`` (samples/s in all), per size the replicas that reach it and the size that does
    with the fewest CPUs in total (ties: the higher total throughput, then fewer replicas);
    with a ``price`` per CPU-hour, the cost per million samples. Replica counts come from each
    size's median throughput in validation."""
    rec: dict[str, Any] = {"target_throughput": target, "cpu_hour_price": price,
                           "latency_budget_ms": budget}
    usable, excluded = [], []
    for row in rows:
        if row["verdict"] == "failed":
            excluded.append({"cpus": row["cpus"],
                             "reason": f"failed: {row.get('reason') or 'no reason recorded'}"})
            continue
        p95 = (row.get("latency_ms") or {}).get("p95")
        if budget is not None and (p95 is None or p95 > budget):
            shown = "unknown" if p95 is None else f"{p95:.2f} ms"
            excluded.append({"cpus": row["cpus"], "reason": f"p95 step latency {shown} is over "
                                                            f"the {budget:g} ms budget"})
            continue
        usable.append(row)
    rec["excluded"] = excluded
    if not usable:
        rec.update(most_efficient=None, fastest=None, options=[], choice=None,
                   summary="no size qualifies" + (f" under the {budget:g} ms latency budget"
                                                 if budget is not None else ""))
        return rec

    def tp(row: dict[str, Any]) -> float:
        return float(row["throughput"]["median"])

    efficient = max(usable, key=lambda r: (tp(r) / r["cpus"], -r["cpus"]))
    fastest = max(usable, key=lambda r: (tp(r), -r["cpus"]))
    rec["most_efficient"] = {"cpus": efficient["cpus"],
                             "per_cpu": tp(efficient) / efficient["cpus"],
                             "throughput": tp(efficient)}
    rec["fastest"] = {"cpus": fastest["cpus"], "throughput": tp(fastest)}
    parts = [f"most efficient: {efficient['cpus']} CPU(s) per process "
             f"({tp(efficient) / efficient['cpus']:.1f} samples/s per CPU)",
             f"fastest single process: {fastest['cpus']} CPU(s) ({tp(fastest):.1f} samples/s)"]
    options = []
    if target is not None:
        for row in usable:
            replicas = max(1, math.ceil(target / tp(row) - 1e-9))
            option = {"cpus": row["cpus"], "replicas": replicas,
                      "total_cpus": replicas * row["cpus"], "throughput": replicas * tp(row)}
            if price is not None:
                option["cost_per_hour"] = option["total_cpus"] * price
            options.append(option)
        choice = min(options, key=lambda o: (o["total_cpus"], -o["throughput"], o["replicas"]))
        rec["choice"] = dict(choice)
        if price is not None:
            rec["choice"]["cost_per_million"] = cost_per_million(
                choice["total_cpus"], target, price)
        parts.insert(0, f"{target:g} samples/s: {choice['replicas']} x {choice['cpus']} CPU(s) "
                        f"= {choice['total_cpus']} CPUs in total "
                        f"({choice['throughput']:.1f} samples/s)"
                     + (f", {choice['total_cpus'] * price:.4g} per hour" if price is not None
                        else ""))
    else:
        rec["choice"] = None
    rec["options"] = options
    if price is not None:
        cheapest = min(usable, key=lambda r: cost_per_million(r["cpus"], tp(r), price))
        rec["cheapest"] = {"cpus": cheapest["cpus"], "cost_per_million": cost_per_million(
            cheapest["cpus"], tp(cheapest), price)}
    if excluded:
        parts.append("excluded: " + ", ".join(f"{e['cpus']} CPU(s) ({e['reason']})"
                                              for e in excluded))
    rec["summary"] = "; ".join(parts)
    return rec
