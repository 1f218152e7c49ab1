"""``show`` one result and ``compare`` several: tuned files or studies, side by side.

A result is read into one plain shape (:class:`Result`) whether it comes from a tuned file or from
a study in Optuna storage, so both commands treat them alike.

What a comparison can and cannot say: each tuned file's numbers come from its own validation, fresh
processes interleaved with TensorFlow's defaults on one machine. Two files were measured at
different times, not interleaved, so drift between runs (identical configurations measured minutes
apart differed by up to ~4% on the reference machines) adds to any difference between them. A
difference is called real only when the exact permutation test agrees (two-sided), the bootstrap
interval of the ratio excludes 1, *and* it is at least ``min_ratio`` (1.05 by default); otherwise it
is within noise. Each file's speedup over its own baseline is measured within one run, on one
machine, and stays comparable across machines where raw throughputs do not.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import render, stats, tuned
from .errors import ConfigError, StudyMismatchError
from .host import FINGERPRINT_KEYS, fingerprint_differences
from .render import Table

ATTR = "tuner."
WORKLOAD_KEYS = ("model", "data", "mode", "batch_size")
DEFAULT_ALPHA = 0.05
# Identical configurations measured minutes apart drifted by up to ~4% (README, Performance):
# the same floor the search uses before it adopts a speedup.
DEFAULT_MIN_RATIO = 1.05

NOT_INTERLEAVED = ("these results were measured in separate runs (different processes, different "
                   "times), not interleaved: drift between runs adds to any difference, so a "
                   "ratio under {min_ratio:g}x is reported as within noise. To settle a close "
                   "call, search both configurations again in one study (or validate them in "
                   "one run).")


@dataclass
class Result:
    """One tuned result, from a tuned file or a study, in the shape show and compare use."""

    label: str
    source: dict[str, Any]
    verdict: str
    summary: str
    settings: dict[str, Any]             # flat knob names, as in Optuna
    machine: dict[str, Any]
    workload: dict[str, Any]
    throughput: dict[str, Any] | None    # median, ci95, per_process
    baseline: dict[str, Any] | None
    speedup: float | None
    speedup_ci95: list[float] | None
    p_value: float | None
    cpu_saturation: float | None
    baseline_cpu_saturation: float | None
    evidence: str
    study: dict[str, Any]
    created: str | None
    rejected: dict[str, Any] | None = None
    expert: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return tuned._rounded(asdict(self))


# -- reading -----------------------------------------------------------------------------------


def _block(raw: Any, where: str) -> dict[str, Any] | None:
    """A throughput block: validated (per_process) or a single search trial (windows)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("median"), (int, float)):
        raise ConfigError(f"{where}: expected a mapping with a numeric median, got {raw!r}")
    per_process = raw.get("per_process")
    if per_process is None:  # an unvalidated file: one search trial, one process
        return {"median": float(raw["median"]), "ci95": None, "per_process": [float(raw["median"])],
                "processes": 1}
    if not isinstance(per_process, list) or not all(isinstance(v, (int, float)) and v > 0
                                                    for v in per_process):
        raise ConfigError(f"{where}.per_process: expected a list of positive numbers, got "
                          f"{per_process!r}")
    return {"median": float(raw["median"]), "ci95": raw.get("ci95"),
            "per_process": [float(v) for v in per_process], "processes": len(per_process)}


def _evidence(throughput: dict[str, Any] | None, verdict: str) -> str:
    if verdict == "unvalidated" or throughput is None or throughput["processes"] < 2:
        return "one search trial (one process; not validated)"
    return (f"validation: {throughput['processes']} fresh processes, interleaved with "
            f"TensorFlow's defaults")


def _flat(settings: Any, where: str) -> dict[str, Any]:
    from . import knobs
    from . import settings as settings_mod

    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: settings: expected a mapping, got {settings!r}")
    # the tuned file nests (tf_data:, env:); a study stores the flat knob names
    if any(name in knobs.KNOBS and "." in name for name in settings):
        flat = {**knobs.default_settings(), **settings}
    else:
        flat = settings_mod.flatten(settings)
    # the newer knobs (allocator, CPU set, instances, OpenMP, tf.data options) only where they
    # are set; declared knobs always
    return {k: v for k, v in flat.items() if k not in knobs.KNOBS
            or knobs.KNOBS[k].always_shown or v != knobs.KNOBS[k].default}


def from_result_doc(doc: dict[str, Any], *, label: str, source: dict[str, Any],
                    where: str) -> Result:
    """A :class:`Result` from a tuned file's content (``where`` names it in errors)."""
    from . import settings as settings_mod

    result = doc.get("result")
    if not isinstance(result, dict):
        raise ConfigError(f"{where}: result: missing or not a mapping")
    verdict = doc.get("verdict")
    if verdict not in ("tuned", "defaults", "unvalidated"):
        raise ConfigError(f"{where}: verdict: {verdict!r} is not one of tuned, defaults, "
                          f"unvalidated")
    throughput = _block(result.get("throughput"), f"{where}: result.throughput")
    if throughput is None:
        raise ConfigError(f"{where}: result.throughput: missing")
    baseline = _block(result.get("baseline_throughput"), f"{where}: result.baseline_throughput")
    search = doc.get("search") or {}
    expert_doc = search.get("expert_rule") or {}
    expert = None
    if expert_doc.get("settings"):
        expert = {"settings": _flat(expert_doc["settings"], where),
                  "speedup_in_search": expert_doc.get("speedup_in_search")}
    study = doc.get("study") or {}
    rejected = result.get("rejected")
    if isinstance(rejected, dict) and rejected.get("settings"):
        rejected = {**rejected, "settings": _flat(rejected["settings"], where)}
    return Result(
        label=label, source=source, verdict=verdict, summary=str(doc.get("summary", "")),
        settings=_flat(doc.get("settings"), where),
        machine=dict(doc.get("machine") or {}),
        workload={k: (doc.get("workload") or {}).get(k) for k in WORKLOAD_KEYS},
        throughput=throughput, baseline=baseline,
        speedup=result.get("speedup"), speedup_ci95=result.get("speedup_ci95"),
        p_value=result.get("p_value"), cpu_saturation=result.get("cpu_saturation"),
        baseline_cpu_saturation=result.get("baseline_cpu_saturation"),
        evidence=_evidence(throughput, verdict),
        study={k: study.get(k) for k in ("name", "storage", "n_trials", "complete", "pruned",
                                         "fail")},
        created=doc.get("created"), rejected=rejected if isinstance(rejected, dict) else None,
        expert=expert, notes=settings_mod.notes(doc.get("settings")))


def from_tuned_file(path: str | Path) -> Result:
    doc = tuned.load(path)
    return from_result_doc(doc, label=str(path), source={"kind": "tuned file", "path": str(path)},
                           where=str(path))


def from_study(storage: str, name: str | None) -> Result:
    """A :class:`Result` from a study: the validated result its last search recorded
    (``tuner.last_result``), else the best trial against the baseline trial (unvalidated)."""
    from optuna.trial import TrialState

    from . import knobs, report
    from .study import BASELINE, EXPERT

    study = report.open_study(storage, name)
    where = f"study {study.study_name!r}"
    attrs = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials
                if t.state == TrialState.COMPLETE and "throughput" in t.user_attrs]
    if not complete:
        raise ConfigError(f"--study-name: {where} has no complete trial to show")
    by_role = {t.user_attrs.get("role"): t for t in complete if t.user_attrs.get("role")}
    best = max(complete, key=lambda t: t.value)
    counts = {s.name.lower(): sum(1 for t in trials if t.state == s)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    config = attrs.get(ATTR + "config") or {}
    base, expert = by_role.get(BASELINE), by_role.get(EXPERT)
    notes: list[str] = []
    last = attrs.get(ATTR + "last_result")
    if isinstance(last, dict) and isinstance(last.get("result"), dict):
        verdict, result = last.get("verdict"), last["result"]
        settings = last.get("settings")
        if settings is None and verdict == "defaults":
            settings = knobs.default_settings()
        if settings is None:
            settings = _settings_from_output(last.get("output"), study.study_name)
        if settings is None:
            settings = best.user_attrs.get("settings", best.params)
            notes.append(f"this study predates recording the validated settings: showing the best "
                         f"search trial's (#{best.number}), which is usually the winner")
        created = last.get("written")
    else:
        verdict, created = "unvalidated", attrs.get(ATTR + "created")
        settings = best.user_attrs.get("settings", best.params)
        result = {"throughput": _trial_block(best),
                  "baseline_throughput": _trial_block(base) if base else None,
                  "speedup": best.value / base.value if base else None,
                  "cpu_saturation": best.user_attrs.get("cpu_saturation")}
        notes.append("no search of this study finished validation: the numbers are single search "
                     "trials (one process each)")
    summary = {"tuned": _tuned_summary(result),
               "defaults": "no configuration was faster than TensorFlow's defaults beyond noise; "
                           "keeping the defaults",
               "unvalidated": "best search trial so far, not validated"}.get(verdict, "")
    doc = {
        "verdict": verdict, "summary": summary, "settings": settings,
        "machine": attrs.get(ATTR + "machine_full") or attrs.get(ATTR + "machine") or {},
        "workload": {**(config.get("workload") or {}),
                     "batch_size": best.user_attrs.get("batch_size")},
        "result": result, "created": created,
        "search": {"expert_rule": {
            "settings": expert.user_attrs.get("settings") if expert else None,
            "speedup_in_search": expert.value / base.value if expert and base else None}},
        "study": {"name": study.study_name, "storage": tuned.mask_url(storage),
                  "n_trials": len(trials), **counts},
    }
    out = from_result_doc(doc, label=f"study {study.study_name}",
                          source={"kind": "study", "name": study.study_name,
                                  "storage": tuned.mask_url(storage)}, where=where)
    out.notes += notes
    return out


def _tuned_summary(result: dict[str, Any]) -> str:
    """The tuned file's summary line, for a study's recorded result."""
    try:
        lo, hi = result["speedup_ci95"]
        return (f"{result['speedup']:.3f}x faster than TensorFlow's defaults (95% CI "
                f"{lo:.3f}-{hi:.3f}, p={result['p_value']:.3g})")
    except (KeyError, TypeError, ValueError):
        return "faster than TensorFlow's defaults (validated)"


def _trial_block(t: Any) -> dict[str, Any] | None:
    if t is None:
        return None
    return {"median": t.user_attrs["throughput"]["median"]}


def _settings_from_output(output: Any, study_name: str) -> dict[str, Any] | None:
    """The settings in the tuned file the last search wrote, if it is still that study's."""
    if not isinstance(output, str) or not os.path.isfile(output):
        return None
    try:
        doc = tuned.load(output)
    except ConfigError:
        return None
    if (doc.get("study") or {}).get("name") != study_name:
        return None
    return doc["settings"]


# -- significance ------------------------------------------------------------------------------


def ratio_verdict(numerator: Sequence[float], denominator: Sequence[float], *,
                  alpha: float = DEFAULT_ALPHA, min_ratio: float = DEFAULT_MIN_RATIO
                  ) -> dict[str, Any]:
    """median(numerator) / median(denominator) (one value per process each), its bootstrap 95%
    interval, a two-sided exact permutation p-value, and a verdict: ``faster``, ``slower`` (the
    difference is real), ``within noise``, or ``no verdict`` when either side has fewer than two
    processes."""
    ratio = stats.median(numerator) / stats.median(denominator)
    if len(numerator) < 2 or len(denominator) < 2:
        return {"ratio": ratio, "ci95": None, "p_value": None, "verdict": "no verdict",
                "significant": False,
                "reason": "one side is a single process, not validated: no test is possible"}
    lo, hi = stats.ratio_ci(numerator, denominator)
    p = min(1.0, 2 * min(stats.permutation_p_greater(numerator, denominator),
                         stats.permutation_p_greater(denominator, numerator)))
    size = max(ratio, 1 / ratio)
    if p >= alpha:
        reason = f"p={p:.3g} >= {alpha:g}"
    elif lo <= 1.0 <= hi:
        reason = f"the 95% interval {lo:.3f}-{hi:.3f} includes 1"
    elif size < min_ratio:
        reason = (f"a {100 * (size - 1):.1f}% difference is below the {100 * (min_ratio - 1):g}% "
                  f"drift between separate runs")
    else:
        reason = ""
    verdict = ("faster" if ratio > 1 else "slower") if not reason else "within noise"
    return {"ratio": ratio, "ci95": [lo, hi], "p_value": p, "verdict": verdict,
            "significant": not reason, "reason": reason}


@dataclass
class Comparison:
    results: list[Result]
    pairs: list[dict[str, Any]]
    warnings: list[str]
    differing: dict[str, list[str]]
    notes: list[str]
    alpha: float
    min_ratio: float

    def as_json(self) -> dict[str, Any]:
        return tuned._rounded({
            "reference": self.results[0].label,
            "alpha": self.alpha, "min_ratio": self.min_ratio,
            "results": [r.as_json() for r in self.results],
            "comparisons": self.pairs,
            "differing": self.differing,
            "warnings": self.warnings,
            "notes": self.notes,
        })


def letters(n: int) -> list[str]:
    return [chr(ord("A") + i) if i < 26 else f"R{i + 1}" for i in range(n)]


def compare(results: Sequence[Result], *, alpha: float = DEFAULT_ALPHA,
            min_ratio: float = DEFAULT_MIN_RATIO, strict: bool = False) -> Comparison:
    """Each result against the first: ratios with verdicts, and every difference in machine,
    TensorFlow version, workload and settings."""
    if len(results) < 2:
        raise ConfigError(f"compare: give at least two results (tuned files or --study-name), "
                          f"got {len(results)}")
    ref = results[0]
    names = letters(len(results))
    warnings: list[str] = []
    pairs: list[dict[str, Any]] = []
    for name, other in zip(names[1:], results[1:]):
        machine_diffs = fingerprint_differences(ref.machine, other.machine)
        workload_diffs = [f"{k}: {ref.workload.get(k)!r} vs {other.workload.get(k)!r}"
                          for k in WORKLOAD_KEYS if ref.workload.get(k) != other.workload.get(k)]
        if machine_diffs:
            warnings.append(f"{name} ({other.label}) was measured on a different machine or "
                            f"TensorFlow than A ({ref.label}): {'; '.join(machine_diffs)}. Its "
                            f"throughput ratio measures the machines as much as the settings; "
                            f"compare the speedups over each one's own baseline instead.")
        if workload_diffs:
            warnings.append(f"{name} ({other.label}) ran a different workload than A: "
                            f"{'; '.join(workload_diffs)}")
        pair: dict[str, Any] = {
            "label": name, "vs": "A", "result": other.label, "reference": ref.label,
            "same_machine": not machine_diffs, "machine_differences": machine_diffs,
            "workload_differences": workload_diffs,
            "throughput": ratio_verdict(other.throughput["per_process"],  # type: ignore[index]
                                        ref.throughput["per_process"],  # type: ignore[index]
                                        alpha=alpha, min_ratio=min_ratio),
        }
        if ref.baseline and other.baseline:
            pair["baseline_throughput"] = ratio_verdict(other.baseline["per_process"],
                                                        ref.baseline["per_process"],
                                                        alpha=alpha, min_ratio=min_ratio)
        if ref.speedup and other.speedup:
            pair["speedup_ratio"] = other.speedup / ref.speedup
        pair["interpretation"] = _interpret(pair)
        pairs.append(pair)
    if strict and any(not p["same_machine"] for p in pairs):
        raise StudyMismatchError("compare --strict: " + " ".join(
            w for w in warnings if "different machine" in w))
    differing = {
        "settings": _differing(r.settings for r in results),
        "machine": _differing({k: r.machine.get(k) for k in (*FINGERPRINT_KEYS, "hostname")}
                              for r in results),
        "workload": _differing(r.workload for r in results),
    }
    notes = [NOT_INTERLEAVED.format(min_ratio=min_ratio)]
    for name, r in zip(names, results):
        notes += [f"{name}: {n}" for n in r.notes]
        if r.throughput and r.throughput["processes"] < 2:
            notes.append(f"{name} ({r.label}) is not validated: one process, so no ratio with it "
                         f"gets a verdict")
    return Comparison(results=list(results), pairs=pairs, warnings=warnings, differing=differing,
                      notes=notes, alpha=alpha, min_ratio=min_ratio)


def _interpret(pair: dict[str, Any]) -> str:
    """One sentence on what the throughput ratio can be blamed on."""
    tp, base = pair["throughput"], pair.get("baseline_throughput")
    if not pair["same_machine"]:
        return ("different machines or TensorFlow versions: the throughput ratio compares them as "
                "much as the settings; the speedup ratio says how much tuning helps on each")
    if pair["workload_differences"]:
        return "different workloads: the throughput ratio compares the models, not the settings"
    if base is None or tp["verdict"] == "no verdict":
        return ""
    if base["significant"] and tp["significant"] and base["verdict"] == tp["verdict"]:
        return (f"TensorFlow's defaults also measured {base['ratio']:.3f}x between the runs: the "
                f"machine's speed or load changed between them, so much of the throughput "
                f"difference is not the settings; the speedup ratio corrects for it")
    if base["significant"]:
        return (f"TensorFlow's defaults measured {base['ratio']:.3f}x between the runs: conditions "
                f"changed; read the speedup ratio rather than the throughput ratio")
    if tp["significant"]:
        return ("TensorFlow's defaults measured the same in both runs (within noise), so the "
                "throughput difference is most likely the settings'")
    return "the two runs agree within noise"


def _differing(dicts: Any) -> list[str]:
    dicts = list(dicts)
    keys: list[str] = []
    for d in dicts:
        keys += [k for k in d if k not in keys]
    return [k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in dicts}) > 1]


# -- output ------------------------------------------------------------------------------------


def _tp(block: dict[str, Any] | None) -> str:
    if not block:
        return "-"
    ci = f" ({render.interval(block['ci95'])})" if block.get("ci95") else ""
    return f"{block['median']:.1f}{ci} n={block['processes']}"


def _speedup(r: Result) -> str:
    if r.speedup is None:
        return "-"
    if r.verdict == "defaults":
        return "1.000x (defaults kept)"
    ci = f" ({render.interval(r.speedup_ci95, 3)})" if r.speedup_ci95 else ""
    p = f" p={r.p_value:.3g}" if r.p_value is not None else ""
    return f"{r.speedup:.3f}x{ci}{p}"


def _machine_line(m: dict[str, Any]) -> str:
    return (f"{m.get('cpu_model', '?')}, {m.get('arch', '?')}, {m.get('usable_cpus', '?')} usable "
            f"CPUs ({m.get('physical_cores', '?')} cores, {m.get('sockets', '?')} socket(s)), "
            f"TensorFlow {m.get('tf_version', '?')}, host {m.get('hostname', '?')}")


def _study_line(s: dict[str, Any]) -> str:
    if not s.get("name"):
        return "-"
    counts = ""
    if s.get("n_trials") is not None:
        counts = (f", {s['n_trials']} trials ({s.get('complete')} complete, {s.get('pruned')} "
                  f"pruned, {s.get('fail')} failed)")
    return f"{s['name']} in {s.get('storage')}{counts}"


def show_table(r: Result) -> Table:
    from . import knobs

    t = Table(header=["", ""])
    t.add("result", r.label)
    t.add("verdict", f"{r.verdict}: {r.summary}")
    defaults = knobs.default_settings()
    t.add("settings", "")
    for name, value in r.settings.items():
        # a declared knob's default is the user's pipeline as written, not TensorFlow's
        note = "" if name not in defaults or value == defaults[name] else \
            f"  (TensorFlow default: {render.value(defaults[name])})"
        t.add(f"  {name}", render.value(value) + note)
    t.add("throughput", _tp(r.throughput) + " samples/s")
    t.add("baseline", (_tp(r.baseline) + " samples/s") if r.baseline else "-")
    t.add("speedup", _speedup(r))
    if r.rejected:
        rj = r.rejected
        t.add("best candidate", f"trial {rj.get('trial')}: {rj.get('speedup', 0):.3f}x "
                                f"({render.interval(rj.get('speedup_ci95'), 3)}) "
                                f"p={rj.get('p_value', 1):.3g}, not adopted: "
                                f"{rj.get('rejected_because') or 'not significant'}")
    sat = render.num(r.cpu_saturation, 2)
    if r.baseline_cpu_saturation is not None:
        sat += f" (baseline {r.baseline_cpu_saturation:.2f})"
    t.add("cpu saturation", sat)
    if r.expert:
        s = r.expert["settings"]
        x = r.expert.get("speedup_in_search")
        t.add("expert rule", f"intra={s.get('intra_op_parallelism_threads')} "
                             f"inter={s.get('inter_op_parallelism_threads')}: "
                             + (f"{x:.3f}x the defaults in its search trial (one process)"
                                if x is not None else "not measured"))
    t.add("evidence", r.evidence)
    w = r.workload
    t.add("workload", f"{w.get('model')} / {w.get('data')}, {w.get('mode')}, "
                      f"batch size {w.get('batch_size')}")
    t.add("machine", _machine_line(r.machine))
    t.add("study", _study_line(r.study))
    t.add("created", r.created or "-")
    for note in r.notes:
        t.add("note", note)
    return t


def format_show(r: Result, fmt: str) -> str:
    check_format(fmt)
    if fmt == "json":
        return json.dumps(r.as_json(), indent=2) + "\n"
    table = show_table(r)
    if fmt == "markdown":
        table.header = ["", r.label]
        table.rows = table.rows[1:]
        table.marked = table.marked[1:]
        return f"### {r.label}\n\n" + table.markdown() + "\n"
    return table.text() + "\n"


def compare_table(c: Comparison) -> Table:
    from . import knobs

    names = letters(len(c.results))
    t = Table(header=["", *names])
    t.add("result", *(r.label for r in c.results))
    t.add("verdict", *(r.verdict for r in c.results))
    shown = [k for k in knobs.KNOBS if any(k in r.settings for r in c.results)]
    shown += list(dict.fromkeys(k for r in c.results for k in r.settings if k not in knobs.KNOBS))
    for key in shown:
        t.add(key, *(render.value(r.settings.get(key, knobs.KNOBS[key].default
                                                 if key in knobs.KNOBS else None))
                     for r in c.results),
              mark=key in c.differing["settings"])
    t.add("throughput (samples/s)", *(_tp(r.throughput) for r in c.results))
    t.add("baseline (samples/s)", *(_tp(r.baseline) for r in c.results))
    t.add("speedup vs own baseline", *(_speedup(r) for r in c.results))
    t.add("cpu saturation", *(render.num(r.cpu_saturation, 2) for r in c.results))
    for key in (*FINGERPRINT_KEYS, "hostname"):
        t.add(key, *(render.value(r.machine.get(key)) for r in c.results),
              mark=key in c.differing["machine"])
    for key in WORKLOAD_KEYS:
        t.add(key, *(render.value(r.workload.get(key)) for r in c.results),
              mark=key in c.differing["workload"])
    t.add("study", *(r.study.get("name") or "-" for r in c.results))
    t.add("created", *(r.created or "-" for r in c.results))
    return t


def _verdict_text(v: dict[str, Any]) -> str:
    ci = f" (95% CI {render.interval(v['ci95'], 3)})" if v.get("ci95") else ""
    p = f", p={v['p_value']:.3g}" if v.get("p_value") is not None else ""
    if v["verdict"] in ("faster", "slower"):
        what = f"{v['verdict']} (a real difference)"
    else:
        what = f"{v['verdict']} ({v['reason']})"
    return f"{v['ratio']:.3f}x{ci}{p}: {what}"


def ratio_table(c: Comparison) -> Table:
    t = Table(header=["ratio", "measured", "value, 95% CI, two-sided p: verdict"])
    for pair in c.pairs:
        mark = "" if pair["same_machine"] else "  [DIFFERENT MACHINE]"
        t.add(f"{pair['label']} / A{mark}", "throughput", _verdict_text(pair["throughput"]))
        if "baseline_throughput" in pair:
            t.add("", "baseline", _verdict_text(pair["baseline_throughput"]))
        if "speedup_ratio" in pair:
            t.add("", "speedup", f"{pair['speedup_ratio']:.3f}x (each over its own baseline, "
                                 f"measured within one run)")
    return t


def format_compare(c: Comparison, fmt: str) -> str:
    check_format(fmt)
    if fmt == "json":
        return json.dumps(c.as_json(), indent=2) + "\n"
    table, ratios = compare_table(c), ratio_table(c)
    if fmt == "markdown":
        out = []
        for w in c.warnings:
            out.append(f"> **WARNING: different machine or TensorFlow.** {w}\n")
        out.append(table.markdown())
        out.append("\nBold rows differ between the results.\n")
        out.append(ratios.markdown())
        out.append("")
        out += [f"- **{p['label']} / A**: {p['interpretation']}" for p in c.pairs
                if p["interpretation"]]
        out += [f"- {n}" for n in c.notes]
        return "\n".join(out) + "\n"
    out = []
    if c.warnings:
        bar = "!" * 78
        out += [bar]
        for w in c.warnings:
            out += textwrap.wrap(f"WARNING: {w}", width=96, initial_indent="!! ",
                                 subsequent_indent="!!   ", break_on_hyphens=False)
        out += [bar, ""]
    out.append(table.text())
    if any(table.marked):
        out.append("(* = differs between the results)")
    out += ["", ratios.text(), ""]
    for line in [f"{p['label']} / A: {p['interpretation']}"
                 for p in c.pairs if p["interpretation"]]:
        out += textwrap.wrap(line, width=100, subsequent_indent="  ")
    for n in c.notes:
        out += textwrap.wrap(f"note: {n}", width=100, subsequent_indent="  ")
    return "\n".join(out) + "\n"


def check_format(fmt: str) -> None:
    if fmt not in render.FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not a known format; allowed: "
                          f"{', '.join(render.FORMATS)}")
