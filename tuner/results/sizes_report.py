"""``show`` and ``report`` of a sizes file: the table per CPU count, throughput and cost against
CPUs."""

from __future__ import annotations

from typing import Any

from tuner.base import render
from tuner.base.render import Table
from tuner.errors import ConfigError
from tuner.results.checks import workload_text
from tuner.results.report import REPORT_SCHEMA, REPORT_SCHEMA_VERSION
from tuner.results.report_html import CSS, _styled, html_table, write_page


def sizes_table(sizes_file: Any) -> Table:
    """One row per size: throughput and its interval, per CPU, latency, memory, saturation,
    cost, replicas for the target, the settings; excluded and recommended sizes marked."""
    from tuner.knobs import settings as settings_mod

    rec = sizes_file.recommendation
    excluded = {e["cpus"]: e["reason"] for e in rec.get("excluded") or []}
    options = {o["cpus"]: o for o in rec.get("options") or []}
    choice = (rec.get("choice") or {}).get("cpus")
    table = Table(header=["cpus", "verdict", "samples/s", "range", "per CPU", "p50 ms", "p95 ms",
                          "peak RSS MiB", "sat", "cost per M samples", "replicas", "settings",
                          "note"])
    for row in sizes_file.rows:
        cpus = row["cpus"]
        if row["verdict"] == "failed":
            table.add(cpus, "failed", "-", "", "-", "-", "-", "-", "-", "-", "-", "",
                      excluded.get(cpus, ""))
            continue
        tp, lat = row["throughput"], row.get("latency_ms") or {}
        notes = []
        if cpus == choice:
            notes.append("recommended")
        if (rec.get("most_efficient") or {}).get("cpus") == cpus:
            notes.append("most efficient")
        if (rec.get("fastest") or {}).get("cpus") == cpus:
            notes.append("fastest")
        if cpus in excluded:
            notes.append(f"excluded: {excluded[cpus]}")
        flat = settings_mod.flatten(row["settings"])
        shown = settings_mod.short({k: v for k, v in flat.items() if k != "cpus"})
        per = tp.get("per_process") or []
        spread = f"{render.rate(min(per))}-{render.rate(max(per))}" if len(per) > 1 else ""
        table.add(cpus, row["verdict"], render.rate(tp["median"]), spread,
                  render.num(row.get("per_cpu")), render.num(lat.get("p50"), 2),
                  render.num(lat.get("p95"), 2), render.num(row.get("peak_rss_mb"), 0),
                  render.num(row.get("cpu_saturation"), 2),
                  render.num(row.get("cost_per_million"), 4),
                  str(options[cpus]["replicas"]) if cpus in options else "-", shown,
                  "; ".join(notes), mark=cpus == choice)
    return table


SIZES_NOTE = ("samples/s: the median of the final validation rounds (fresh processes pinned to "
              "that many CPUs); range: their lowest to highest; peak RSS MiB: the field "
              "peak_rss_mb, in MiB (2^20 bytes); cost per M samples: a million samples at "
              "--cpu-hour-price, in that price's unit; replicas: to reach the target at that "
              "median; - = not measured")


def sizes_header(sizes_file: Any) -> list[str]:
    doc = sizes_file.doc
    machine = doc.get("machine") or {}
    workload = doc.get("workload") or {}
    rec = sizes_file.recommendation
    lines = [f"sizes: {sizes_file.path}",
             f"workload: {workload_text(workload)}",
             f"machine: {machine.get('cpu_model') or '-'}, {machine.get('usable_cpus') or '-'} "
             f"usable CPUs, TensorFlow {machine.get('tf_version') or '-'}"]
    asked = [f"target {rec['target_throughput']:g} samples/s"
             if rec.get("target_throughput") is not None else None,
             f"{rec['cpu_hour_price']:g} per CPU-hour"
             if rec.get("cpu_hour_price") is not None else None,
             f"p95 budget {rec['latency_budget_ms']:g} ms"
             if rec.get("latency_budget_ms") is not None else None]
    if any(asked):
        lines.append("asked: " + ", ".join(a for a in asked if a))
    if doc.get("interrupted"):
        lines.append(f"interrupted: {doc['interrupted']}")
    return [render.plain(line) for line in lines]   # the file's text, one line each


def format_sizes(sizes_file: Any, fmt: str) -> str:
    """``show`` / ``report`` of a sizes file: text, markdown or JSON."""
    import json

    if fmt not in render.FORMATS:
        raise ConfigError(f"--format: {render.quoted(fmt)} is not a known format"
                          f"{render.did_you_mean(fmt, render.FORMATS)}; allowed: "
                          f"{', '.join(render.FORMATS)}")
    if fmt == "json":
        return json.dumps(sizes_file.doc, indent=2, default=str) + "\n"
    table = sizes_table(sizes_file)
    summary = sizes_file.recommendation.get("summary") or ""
    note = SIZES_NOTE
    if fmt == "markdown":
        return "\n\n".join([*map(render.markdown, sizes_header(sizes_file)), table.markdown(),
                            f"**Recommendation:** {render.markdown(summary)}", note]) + "\n"
    return "\n".join([*sizes_header(sizes_file), "", table.text(), "",
                      f"recommendation: {render.plain(summary)}", note]) + "\n"


def sizes_figures(sizes_file: Any) -> list[tuple[str, Any, str]]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [r for r in sizes_file.rows if r["verdict"] != "failed"]
    cpus = [r["cpus"] for r in rows]
    medians = [r["throughput"]["median"] for r in rows]
    lows = [m - r["throughput"]["ci95"][0] for m, r in zip(medians, rows)]
    highs = [r["throughput"]["ci95"][1] - m for m, r in zip(medians, rows)]
    costs = [r.get("cost_per_million") for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(
        x=cpus, y=medians, mode="lines+markers", name="samples/s (one process)",
        error_y={"type": "data", "symmetric": False, "array": highs, "arrayminus": lows},
        hovertemplate="%{x} CPUs: %{y:.1f} samples/s<extra></extra>"), secondary_y=False)
    priced = all(c is not None for c in costs)
    if priced:
        fig.add_trace(go.Scatter(
            x=cpus, y=costs, mode="lines+markers", name="cost per million samples",
            line={"dash": "dot"},
            hovertemplate="%{x} CPUs: %{y:.4g} per million samples<extra></extra>"),
            secondary_y=True)
    fig.update_xaxes(title="CPUs per process", tickvals=cpus)
    fig.update_yaxes(title="samples/s", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title="cost per million samples", secondary_y=True, rangemode="tozero")
    note = ("error bars: 95% interval of the validation rounds" + (
        "" if priced else "; no cost: run size with --cpu-hour-price to plot it"))
    per_cpu = go.Figure(go.Bar(x=[str(c) for c in cpus], y=[r["per_cpu"] for r in rows],
                               hovertemplate="%{x} CPUs: %{y:.1f} samples/s per CPU"
                                             "<extra></extra>"))
    per_cpu.update_xaxes(title="CPUs per process", type="category")
    per_cpu.update_yaxes(title="samples/s per CPU")
    return [("Throughput and cost against CPUs", _styled(fig), note),
            ("Efficiency: samples/s per CPU", _styled(per_cpu),
             "linear scaling keeps the bars level; falling bars are CPUs a process cannot use")]


def format_sizes_html(sizes_file: Any) -> str:
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise ConfigError("--html: the plots need plotly: pip install 'tuner[report]' (or "
                          "pip install plotly)") from None
    title = f"tuner sizes: {render.html_text(sizes_file.path)}"
    parts = [(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
              f"<style>{CSS}</style></head><body><h1>{title}</h1>")]
    parts += [f"<p>{render.html_text(line)}</p>" for line in sizes_header(sizes_file)[1:]]
    summary = sizes_file.recommendation.get("summary") or ""
    parts.append(f"<p><b>Recommendation:</b> {render.html_text(summary)}</p>")
    table = sizes_table(sizes_file)
    classes = ["recommended" if m else "" for m in table.marked]
    parts.append(f"<h2>Sizes</h2><p class=note>{render.html_text(SIZES_NOTE)}</p>"
                 + html_table(table, classes=classes, numeric={0, 2, 4, 5, 6, 7, 8, 9, 10}))
    first = True
    for name, fig, note in sizes_figures(sizes_file):
        parts.append(f"<h2>{render.html_text(name)}</h2><p class=note>{render.html_text(note)}</p>")
        parts.append("<div class=plot>" + fig.to_html(
            full_html=False, include_plotlyjs=first,
            config={"displaylogo": False, "responsive": True}) + "</div>")
        first = False
    parts.append("</body></html>\n")
    return "".join(parts)


def write_sizes_html(sizes_file: Any, path: str) -> None:
    write_page(format_sizes_html(sizes_file), path)


def format_sizes_json(sizes_file: Any) -> str:
    """``report --format json`` of a sizes file: the whole sizes document."""
    return render.json_document(REPORT_SCHEMA, REPORT_SCHEMA_VERSION, {
        "kind": "sizes", "sizes_file": sizes_file.path, "sizes": sizes_file.doc})
