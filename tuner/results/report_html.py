"""``report --html``: one self-contained offline page, the plots escaped (study text is untrusted).
"""

from __future__ import annotations

from typing import Any

from tuner.base import render
from tuner.base.files import check_writable, write_text_atomic
from tuner.base.render import Table
from tuner.errors import ConfigError, StudyError
from tuner.results.report import (
    LEGEND,
    ROLES,
    StudyReport,
    TrialRow,
    header_lines,
    reference_table,
    trial_table,
    validated_line,
)
from tuner.tuned.store import BASELINE, EXPERT


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


def html_table(table: Table, classes: list[str] | None = None, numeric: set[int] = frozenset()
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
    validated = validated_line(report.record.last_result)
    parts.append("<h2>Best vs baseline vs expert rule</h2>"
                 "<p class=note>search trials, one process each</p>"
                 + html_table(reference_table(report), numeric={3, 4, 5})
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
            parts.append(html_table(t, numeric={1}))
    table = trial_table(report)
    parts.append(f"<h2>Trials</h2><p class=note>{render.html_text(LEGEND)}</p>"
                 + html_table(table, classes=[r.state for r in report.rows],
                               numeric={0, 8, 9, 10}))
    parts.append("</body></html>\n")
    return "".join(parts)


def check_html_path(path: str) -> None:
    """Refuse an ``--html`` path the report could not be written to (a missing folder too:
    the report makes none). Nothing is created."""
    check_writable(path, "--html", "the report", make_folders=False)


def write_html(report: StudyReport, path: str) -> None:
    write_page(format_html(report), path)


def write_page(text: str, path: str) -> None:
    if "<script src=\"http" in text or "<script src='http" in text:
        raise StudyError("report: the page would load a script from the network; refusing to "
                         "write a report that does not open offline")
    check_html_path(path)  # write_text_atomic would create a missing folder
    try:
        # a temporary file renamed into place: a failed write leaves no half report behind
        write_text_atomic(path, text)   # the umask's mode, set before the rename
    except OSError as exc:
        raise StudyError(f"--html: cannot write {path}: {exc.strerror or exc}") from None
