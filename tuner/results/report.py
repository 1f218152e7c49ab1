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
from tuner.base.render import Table
from tuner.results.checks import workload_text
from tuner.results.model import accuracy_text
from tuner.results.studies import StudyRecord, read_study, trial_problem
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
    import tuner.knobs as knobs

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


def validated_line(last: dict[str, Any] | None) -> str:
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
           "validated: " + render.plain(validated_line(report.record.last_result)),
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
