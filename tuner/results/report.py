"""``report``: one study's trials, best against baseline and expert rule, parameter importances
and plots, in the terminal or as one self-contained HTML file (plotly.js inline, nothing loaded
from the network, so it opens offline and can be attached to a ticket).

Plots use Optuna's visualisations where they fit (optimisation history, importances); the
intra x inter heatmap and the saturation scatter are plain plotly figures built from the trials'
user attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuner.base import render
from tuner.base.files import check_writable, write_text_atomic
from tuner.base.render import Table
from tuner.errors import ConfigError, StudyError
from tuner.results.model import StudyRecord, accuracy_text, read_study, trial_problem, workload_text
from tuner.tuned.store import BASELINE, EXPERT, SCREEN

ROLES = (BASELINE, EXPERT, SCREEN)
COLUMNS = {"intra_op_parallelism_threads": "intra", "inter_op_parallelism_threads": "inter",
           "tf_data.private_threadpool_size": "data.pool",
           "tf_data.max_intra_op_parallelism": "data.intra", "env.TF_ENABLE_ONEDNN_OPTS": "onednn"}


@dataclass
class TrialRow:
    number: int
    role: str
    state: str
    settings: dict[str, Any]
    throughput: float | None
    spread: float | None          # render.SPREAD: the window range over the median
    saturation: float | None
    note: str

    def cells(self) -> list[str]:
        spread = f"{self.spread * 100:.1f}%" if self.spread is not None else ""
        return [str(self.number), self.role, self.state,
                *(_setting(self.settings, name) for name in COLUMNS),
                render.num(self.throughput), spread, render.num(self.saturation, 2), self.note]


def _setting(settings: dict[str, Any], name: str) -> str:
    from tuner import knobs

    if name not in settings:
        return "?"
    value = settings[name]
    if value == knobs.KNOBS[name].default:
        return "-"
    return str(value)


@dataclass
class StudyReport:
    record: StudyRecord
    rows: list[TrialRow]
    counts: dict[str, int]
    references: list[dict[str, Any]]
    importances: dict[str, float] | None
    importance_note: str


def build(storage: str, name: str | None) -> StudyReport:
    from optuna.trial import TrialState

    record = read_study(storage, name)
    rows = []
    for t in record.trials:
        problem = trial_problem(t)
        if problem is not None:   # a damaged record: an error row, in no figure or comparison
            rows.append(TrialRow(number=t.number, role="?", state="ERROR", settings={},
                                 throughput=None, spread=None, saturation=None,
                                 note=f"unreadable record: {problem}"))
            continue
        attrs = t.user_attrs
        tp = attrs.get("throughput") if t.state == TrialState.COMPLETE else None
        note = attrs.get("fail_reason") or attrs.get("prune_reason") or ""
        rows.append(TrialRow(
            number=t.number, role=attrs.get("role") or "search", state=t.state.name,
            # a WAITING trial has no params yet, only the values it was enqueued with
            settings=attrs.get("settings") or dict(t.params) or
            dict(t.system_attrs.get("fixed_params") or {}),
            throughput=tp["median"] if tp else None,
            spread=tp["rel_spread"] if tp and tp.get("rel_spread") is not None else None,
            saturation=attrs.get("cpu_saturation") if tp else None, note=note))
    importances, why = _importances(record)
    return StudyReport(record=record, rows=rows, counts=record.counts(),
                       references=_references(rows), importances=importances,
                       importance_note=why)


def _references(rows: list[TrialRow]) -> list[dict[str, Any]]:
    done = [r for r in rows if r.throughput is not None]
    if not done:
        return []
    base = next((r for r in done if r.role == BASELINE), None)
    out = []
    for what, row in (("best", max(done, key=lambda r: r.throughput)),  # type: ignore[arg-type]
                      ("baseline", base),
                      ("expert rule", next((r for r in done if r.role == EXPERT), None))):
        if row is None:
            continue
        out.append({"what": what, "trial": row.number, "settings": row.settings,
                    "throughput": row.throughput, "saturation": row.saturation,
                    "vs_baseline": row.throughput / base.throughput if base else None})
    return out


def _importances(record: StudyRecord) -> tuple[dict[str, float] | None, str]:
    from optuna.importance import get_param_importances
    from optuna.trial import TrialState

    complete = [t for t in record.trials if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return None, f"parameter importances need at least 2 complete trials ({len(complete)} here)"
    varied = [n for n in {k for t in complete for k in t.params}
              if len({repr(t.params.get(n)) for t in complete}) > 1]
    if not varied:
        return None, "parameter importances need parameters that vary across complete trials"
    try:
        return dict(get_param_importances(record.study)), "PED-ANOVA, Optuna's default evaluator"
    except (ValueError, RuntimeError, ArithmeticError, TypeError) as exc:
        return None, f"Optuna could not compute parameter importances: {exc}"


# -- terminal ----------------------------------------------------------------------------------


def trial_table(report: StudyReport) -> Table:
    t = Table(header=["#", "role", "state", *COLUMNS.values(), "samples/s", "spread", "sat",
                      "note"])
    for row in report.rows:
        t.add(*row.cells())
    return t


def reference_table(report: StudyReport) -> Table:
    from tuner.knobs import settings as settings_mod

    t = Table(header=["", "trial", "settings", "samples/s", "x baseline", "sat"])
    for ref in report.references:
        t.add(ref["what"], f"#{ref['trial']}", settings_mod.short(ref["settings"]),
              render.num(ref["throughput"]), render.num(ref["vs_baseline"], 3),
              render.num(ref["saturation"], 2))
    return t


def _validated_line(last: dict[str, Any] | None) -> str:
    if not last:
        return "no search of this study has finished validation yet"
    r = last.get("result") or {}
    if last.get("verdict") == "tuned":
        from tuner.knobs import settings as settings_mod

        lo, hi = r["speedup_ci95"]
        settings = last.get("settings")  # recorded since show/compare were added
        which = f" ({settings_mod.short(settings_mod.flatten(settings))})" if settings else ""
        return (f"tuned{which}: {r['speedup']:.3f}x TensorFlow's defaults (95% CI "
                f"{lo:.3f}-{hi:.3f}, p={r['p_value']:.3g}), measured in fresh interleaved "
                f"processes")
    if last.get("verdict") == "defaults":
        rejected = r.get("rejected")
        extra = (f"; best candidate trial {rejected.get('trial')} measured "
                 f"{render.num(rejected.get('speedup'), 3)}x, not adopted: "
                 f"{rejected.get('rejected_because')}") if rejected else ""
        return f"defaults: nothing beat TensorFlow's defaults beyond noise{extra}"
    return f"{last.get('verdict')}: not validated"


def _accuracy_lines(report: StudyReport) -> list[str]:
    """The accuracy guard: the validated result's deviation, and the trials it ruled out."""
    lines = []
    last = report.record.last_result or {}
    block = (last.get("result") or {}).get("accuracy") if isinstance(last.get("result"),
                                                                     dict) else None
    if isinstance(block, dict):
        lines.append("accuracy: " + accuracy_text(block))
    out = []
    for t in report.record.trials:
        excess = t.user_attrs.get("accuracy_excess")
        if isinstance(excess, (int, float)) and excess > 0 and "duplicate_of" not in t.user_attrs:
            rel = (t.user_attrs.get("accuracy") or {}).get("rel_l2")
            shown = f"rel_l2 {rel:.3g}" if isinstance(rel, (int, float)) else "not finite"
            out.append(f"#{t.number} ({shown})")
    if out:
        lines.append(f"beyond the accuracy limit (infeasible, never adopted): {', '.join(out)}")
    return lines


def header_lines(report: StudyReport) -> list[str]:
    r, c = report.record, report.counts
    m, w = r.machine, r.workload
    lines = [
        f"study {r.name} in {r.storage}: {len(report.rows)} trials ({c['complete']} complete, "
        f"{c['pruned']} pruned, {c['fail']} failed"
        + (f", {c['running']} running" if c["running"] else "") + ")",
        f"workload: {workload_text(w)}",
        (f"machine: {m.get('cpu_model', '?')}, {m.get('usable_cpus', '?')} usable CPUs, "
         f"TensorFlow {m.get('tf_version', '?')}"),
    ]
    return [render.plain(line) for line in lines]   # names and values from the study


LEGEND = (f"settings: {render.LEGEND_DEFAULT}, ? = not recorded on the trial; "
          f"{render.SPREAD}")


def _no_references(report: StudyReport) -> str:
    if report.counts.get("complete"):
        # a study another tool made: complete trials, but none with tuner's measurements
        return (f"  none of the {report.counts['complete']} complete trials carries tuner's "
                f"measurements (user attribute 'throughput'): a study another tool made?")
    return "  no complete trial yet"


def format_text(report: StudyReport) -> str:
    out = [*header_lines(report), "", trial_table(report).text(), LEGEND, "",
           "best vs baseline vs expert rule (search trials, one process each):",
           reference_table(report).text() if report.references else _no_references(report),
           "",
           "validated: " + render.plain(_validated_line(report.record.last_result)),
           *_accuracy_lines(report), ""]
    if report.importances:
        out.append(f"parameter importances ({report.importance_note}):")
        names = {k: render.plain(k) for k in report.importances}   # parameter names: the study's
        width = max(len(k) for k in names.values())
        for name, value in report.importances.items():
            out.append(f"  {names[name].ljust(width)}  {value:.3f}  {'#' * round(value * 40)}")
    else:
        out.append(f"parameter importances: {render.plain(report.importance_note)}")
    return "\n".join(out) + "\n"


# -- JSON ----------------------------------------------------------------------------------------

# `report --format json` (docs/results.md, "JSON output"). History:
# 1 - first version.
REPORT_SCHEMA = "tuner.report"
REPORT_SCHEMA_VERSION = 1


def format_json(report: StudyReport) -> str:
    """The study as one JSON document: every trial as Optuna holds it (its parameters and every
    attribute the search recorded, so new attributes flow through), the references, the
    importances, and the last validated result as the search stored it (the tuned file's
    verdict, settings and result blocks, whole)."""
    r = report.record
    trials = [{"number": t.number, "state": t.state.name, "value": t.value,
               "params": dict(t.params), "user_attrs": dict(t.user_attrs),
               "started": t.datetime_start.isoformat() if t.datetime_start else None,
               "completed": t.datetime_complete.isoformat() if t.datetime_complete else None}
              for t in r.trials]
    return render.json_document(REPORT_SCHEMA, REPORT_SCHEMA_VERSION, {
        "kind": "study",
        "study": {"name": r.name, "storage": r.storage, "created": r.created,
                  "counts": report.counts, "machine": r.machine, "workload": r.workload},
        "trials": trials,
        "references": report.references,
        "importances": report.importances, "importance_note": report.importance_note,
        "last_result": r.last_result,
    })


def format_sizes_json(sizes_file: Any) -> str:
    """``report --format json`` of a sizes file: the whole sizes document."""
    return render.json_document(REPORT_SCHEMA, REPORT_SCHEMA_VERSION, {
        "kind": "sizes", "sizes_file": sizes_file.path, "sizes": sizes_file.doc})


# -- HTML --------------------------------------------------------------------------------------


def figures(report: StudyReport) -> list[tuple[str, Any, str]]:
    """(title, plotly figure or None, note) for each plot."""
    import optuna.visualization as vis

    study = report.record.study
    out: list[tuple[str, Any, str]] = []
    fig = vis.plot_optimization_history(study, target_name="throughput (samples/s)")
    out.append(("Optimisation history", _styled(fig),
                "each dot is one trial (one process); the line is the best so far"))
    if report.importances:
        fig = vis.plot_param_importances(study, target_name="throughput (samples/s)")
        out.append(("Parameter importances", _styled(fig), report.importance_note))
    else:
        out.append(("Parameter importances", None, report.importance_note))
    out.append(("Throughput over intra-op x inter-op threads", heatmap(report),
                ("best complete trial per cell (samples/s); the other knobs vary between trials; "
                 "empty cells were not measured; 0 = TensorFlow's default")))
    out.append(("CPU saturation vs throughput", saturation_scatter(report),
                "saturation: the share of the usable CPUs the process kept busy while measuring"))
    return out


# plotly reads a pseudo-HTML subset (<a href>, <b>, <br>...) in every label, title and hover
# text; these are the figure's own tags, kept after escaping everything else
_OWN_TAGS = ("<br>", "<extra></extra>")
_TRACE_TEXT = ("name", "text", "hovertext", "hovertemplate", "texttemplate", "x", "y",
               "legendgroup")


def _escaped(value: Any) -> Any:
    """A figure's text (a string, or a list of values) with every string HTML-escaped but for
    the figure's own tags: a parameter name, trial attribute or setting from a study shows as
    the text it is, never as a link or markup."""
    if isinstance(value, str):
        text = render.html_text(value)
        for tag in _OWN_TAGS:
            text = text.replace(render.html_text(tag), tag)
        return text
    if isinstance(value, (list, tuple)):
        return type(value)(_escaped(v) for v in value)
    return value


def _escape_figure(fig: Any) -> Any:
    for trace in fig.data:
        shown = trace.to_plotly_json()
        for key in _TRACE_TEXT:
            if shown.get(key) is not None:
                trace[key] = _escaped(shown[key])
    layout = fig.layout
    if layout.title.text is not None:
        layout.title.text = _escaped(layout.title.text)
    for axis in (getattr(layout, name) for name in layout if name.startswith(("xaxis", "yaxis"))):
        if axis.title.text is not None:
            axis.title.text = _escaped(axis.title.text)
        if axis.ticktext is not None:
            axis.ticktext = _escaped(axis.ticktext)
    for note in layout.annotations or ():
        if note.text is not None:
            note.text = _escaped(note.text)
    return fig


def _styled(fig: Any) -> Any:
    _escape_figure(fig)
    fig.update_layout(template="plotly_white", height=420, margin={"l": 60, "r": 20, "t": 50,
                                                                   "b": 50})
    return fig


def heatmap(report: StudyReport) -> Any:
    import plotly.graph_objects as go

    intra_key, inter_key = "intra_op_parallelism_threads", "inter_op_parallelism_threads"
    done = [r for r in report.rows if r.throughput is not None]
    intras = sorted({r.settings.get(intra_key) or 0 for r in done})
    inters = sorted({r.settings.get(inter_key) or 0 for r in done})
    best: dict[tuple[int, int], TrialRow] = {}
    for r in done:
        key = (r.settings.get(intra_key) or 0, r.settings.get(inter_key) or 0)
        if key not in best or r.throughput > best[key].throughput:  # type: ignore[operator]
            best[key] = r
    z = [[best[(a, e)].throughput if (a, e) in best else None for e in inters] for a in intras]
    text = [[f"{best[(a, e)].throughput:.0f}<br>#{best[(a, e)].number}" if (a, e) in best else ""
             for e in inters] for a in intras]
    fig = go.Figure(go.Heatmap(
        z=z, x=[str(e) for e in inters], y=[str(a) for a in intras], text=text,
        texttemplate="%{text}", colorscale="Viridis", colorbar={"title": "samples/s"},
        hovertemplate="intra %{y}, inter %{x}: %{z:.1f} samples/s<extra></extra>"))
    fig.update_xaxes(title="inter_op_parallelism_threads", type="category")
    fig.update_yaxes(title="intra_op_parallelism_threads", type="category")
    return _styled(fig)


def saturation_scatter(report: StudyReport) -> Any:
    import plotly.graph_objects as go

    from tuner.knobs import settings as settings_mod

    fig = go.Figure()
    for role in (*ROLES, "search"):
        rows = [r for r in report.rows if r.role == role and r.throughput is not None]
        if not rows:
            continue
        fig.add_trace(go.Scatter(
            x=[r.saturation for r in rows], y=[r.throughput for r in rows], mode="markers",
            name=role, marker={"size": 11 if role in (BASELINE, EXPERT) else 8},
            text=[f"#{r.number} {settings_mod.short(r.settings)}" for r in rows],
            hovertemplate="%{text}<br>saturation %{x:.2f}, %{y:.1f} samples/s<extra></extra>"))
    fig.update_xaxes(title="CPU saturation")
    fig.update_yaxes(title="throughput (samples/s)")
    return _styled(fig)


CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.recommended td { font-weight: 600; background: #eef6ee; }
tr.FAIL td { color: #a00; } tr.PRUNED td { color: #777; }
.plot { margin: 12px 0 28px; } .note { color: #555; font-size: 13px; }
"""


def _html_table(table: Table, classes: list[str] | None = None, numeric: set[int] = frozenset()
                ) -> str:
    head = "".join(f"<th>{render.html_text(h)}</th>" for h in table.header)
    body = []
    for i, row in enumerate(table.rows):
        cls = f' class="{render.html_text(classes[i])}"' if classes else ""
        cells = "".join(f'<td{" class=n" if j in numeric else ""}>{render.html_text(c)}</td>'
                        for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def format_html(report: StudyReport) -> str:
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise ConfigError("--html: the plots need plotly: pip install 'tuner[report]' (or "
                          "pip install plotly)") from None
    title = f"tuner report: {render.html_text(report.record.name)}"
    parts = [(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
             f"<style>{CSS}</style></head><body><h1>{title}</h1>")]
    parts += [f"<p>{render.html_text(line)}</p>" for line in header_lines(report)]
    validated = _validated_line(report.record.last_result)
    parts.append("<h2>Best vs baseline vs expert rule</h2>"
                 "<p class=note>search trials, one process each</p>"
                 + _html_table(reference_table(report), numeric={3, 4, 5})
                 + f"<p><b>Validated:</b> {render.html_text(validated)}</p>")
    first = True
    for title, fig, note in figures(report):
        parts.append(f"<h2>{render.html_text(title)}</h2>"
                     f"<p class=note>{render.html_text(note)}</p>")
        if fig is None:
            continue
        # plotly.js goes in once, inline, with the first figure: one file that works offline
        parts.append("<div class=plot>" + fig.to_html(
            full_html=False, include_plotlyjs=first,
            config={"displaylogo": False, "responsive": True}) + "</div>")
        first = False
        if title == "Parameter importances" and report.importances:
            t = Table(header=["parameter", "importance"])
            for name, value in report.importances.items():
                t.add(name, f"{value:.3f}")
            parts.append(_html_table(t, numeric={1}))
    table = trial_table(report)
    parts.append(f"<h2>Trials</h2><p class=note>{render.html_text(LEGEND)}</p>"
                 + _html_table(table, classes=[r.state for r in report.rows],
                               numeric={0, 8, 9, 10}))
    parts.append("</body></html>\n")
    return "".join(parts)


def check_html_path(path: str) -> None:
    """Refuse an ``--html`` path the report could not be written to (a missing folder too:
    the report makes none). Nothing is created."""
    check_writable(path, "--html", "the report", make_folders=False)


def write_html(report: StudyReport, path: str) -> None:
    _write_page(format_html(report), path)


def _write_page(text: str, path: str) -> None:
    if "<script src=\"http" in text or "<script src='http" in text:
        raise StudyError("report: the page would load a script from the network; refusing to "
                         "write a report that does not open offline")
    check_html_path(path)  # write_text_atomic would create a missing folder
    try:
        # a temporary file renamed into place: a failed write leaves no half report behind
        write_text_atomic(path, text)   # the umask's mode, set before the rename
    except OSError as exc:
        raise StudyError(f"--html: cannot write {path}: {exc.strerror or exc}") from None




# -- a sizes file (python -m tuner size) -------------------------------------------------------

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
                 + _html_table(table, classes=classes, numeric={0, 2, 4, 5, 6, 7, 8, 9, 10}))
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
    _write_page(format_sizes_html(sizes_file), path)
