"""``show`` one result and ``compare`` several: tuned files or studies, side by side, each read
through :mod:`tuner.results.model`.

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
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tuner.base import render, stats
from tuner.base.host import FINGERPRINT_KEYS, fingerprint_differences
from tuner.base.render import Table
from tuner.base.urls import masked
from tuner.errors import ConfigError, StudyMismatchError
from tuner.results.checks import THREAD_COUNTS, workload_text
from tuner.results.model import WORKLOAD_KEYS, Result, accuracy_text
from tuner.tuned import store

DEFAULT_ALPHA = 0.05
# Identical configurations measured minutes apart drifted by up to ~4% (README, Performance):
# the same floor the search uses before it adopts a speedup.
DEFAULT_MIN_RATIO = 1.05

NOT_INTERLEAVED = ("these results were measured in separate runs (different processes, different "
                   "times), not interleaved: drift between runs adds to any difference, so a "
                   "ratio under {min_ratio:g}x is reported as within noise. To settle a close "
                   "call, search both configurations again in one study (or validate them in "
                   "one run).")


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
        return store.rounded({
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


def compare_results(results: Sequence[Result], *, alpha: float = DEFAULT_ALPHA,
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
    return render.throughput(block["median"], block.get("per_process"))


def _speedup(r: Result) -> str:
    if r.verdict == "defaults":   # its settings are the baseline: nothing of its own to show
        return "defaults kept"
    if r.speedup is None:
        return "-"
    return render.ratio(r.speedup, r.speedup_ci95, r.p_value)


NOT_SET = "not set"


def setting_text(name: str, value: Any) -> str:
    """A setting's value; a thread count the result does not set reads as such, not as 0."""
    if value is None and name in THREAD_COUNTS:
        return NOT_SET
    return render.setting(value)


def _expert_text(expert: dict[str, Any]) -> str:
    """The expert rule's search trial against the baseline trial, or what is known without it."""
    x, measured = expert.get("speedup_in_search"), expert.get("throughput_in_search")
    if x is not None:
        return f"{x:.3f}x the defaults in its search trial (one process)"
    if measured is not None:
        return (f"{measured:.1f} samples/s in its search trial (one process); no baseline trial "
                f"completed to compare it with")
    return "not measured (its search trial did not complete)"


def _first_steps_text(first: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """What the first steps of each process cost (tracing, XLA's compilation): a short job or
    a server's first requests pay it."""
    text = (f"{render.num(first.get('seconds'), 2)} s for the first {first.get('steps')} steps, "
            f"{render.num(first.get('extra_seconds'), 2)} s more than steady steps")
    if baseline:
        text += f" (baseline {render.num(baseline.get('extra_seconds'), 2)} s more)"
    return text + ": each process pays it once"


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
    storage = s.get("storage")
    # a file written by hand (or by an old tuner) may hold a password: masked like every URL
    return f"{s['name']} in {masked(storage) if isinstance(storage, str) else storage}{counts}"


def show_table(r: Result) -> Table:
    import tuner.knobs as knobs

    t = Table(header=["", ""])
    t.add("result", r.label)
    t.add("verdict", f"{r.verdict}: {r.summary}")
    defaults = knobs.default_settings()
    t.add("settings", "")
    for name, value in r.settings.items():
        # a declared knob's default is the user's pipeline as written, not TensorFlow's
        note = "" if name not in defaults or value in (None, defaults[name]) else \
            f"  ({render.TF_DEFAULT}: {NOT_SET if defaults[name] is None else defaults[name]})"
        t.add(f"  {name}", setting_text(name, value) + note)
    t.add("throughput", _tp(r.throughput))
    t.add("baseline", _tp(r.baseline))
    t.add("speedup", _speedup(r))
    if r.accuracy:
        t.add("accuracy", accuracy_text(r.accuracy))
    if r.rejected:
        rj = r.rejected
        ratio = render.ratio(rj.get("speedup"), rj.get("speedup_ci95"), rj.get("p_value"),
                             untested=True)
        t.add("best candidate", f"trial {rj.get('trial')}: {ratio}, not adopted: "
                                f"{rj.get('rejected_because') or 'not significant'}")
    sat = render.num(r.cpu_saturation, 2)
    if r.baseline_cpu_saturation is not None:
        sat += f" (baseline {r.baseline_cpu_saturation:.2f})"
    t.add("cpu saturation", sat)
    if r.first_steps:
        t.add("first steps", _first_steps_text(r.first_steps, r.baseline_first_steps))
    for line in r.advice:
        t.add("advice", render.plain(line))
    if r.expert:
        s = r.expert["settings"]
        intra, inter = (setting_text(k, s.get(k)) for k in THREAD_COUNTS)
        t.add("expert rule", f"intra={intra} inter={inter}: " + _expert_text(r.expert))
    t.add("evidence", r.evidence)
    if r.budget:
        b = r.budget
        t.add("budget", f"{render.num(b.get('budget_s'), 0)} s: search "
                        f"{render.num(b.get('spent_search_s'), 0)} s, validation "
                        f"{render.num(b.get('spent_validation_s'), 0)} s; search stopped: "
                        f"{b.get('stopped') or '-'}")
    t.add("workload", workload_text(r.workload))
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
        return f"### {render.markdown(r.label)}\n\n" + table.markdown() + "\n"
    return table.text() + "\n"


def compare_table(c: Comparison) -> Table:
    import tuner.knobs as knobs

    names = letters(len(c.results))
    t = Table(header=["", *names])
    t.add("result", *(r.label for r in c.results))
    t.add("verdict", *(r.verdict for r in c.results))
    shown = [k for k in knobs.KNOBS if any(k in r.settings for r in c.results)]
    shown += list(dict.fromkeys(k for r in c.results for k in r.settings if k not in knobs.KNOBS))
    for key in shown:
        t.add(key, *(setting_text(key, r.settings.get(key, knobs.KNOBS[key].default
                                                      if key in knobs.KNOBS else None))
                     for r in c.results),
              mark=key in c.differing["settings"])
    t.add("throughput", *(_tp(r.throughput) for r in c.results))
    t.add("baseline", *(_tp(r.baseline) for r in c.results))
    t.add("speedup vs own baseline", *(_speedup(r) for r in c.results))
    t.add("cpu saturation", *(render.num(r.cpu_saturation, 2) for r in c.results))
    if any(r.accuracy for r in c.results):
        t.add("accuracy (deviation)", *(accuracy_text(r.accuracy) for r in c.results))
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
            out.append(f"> **WARNING: different machine or TensorFlow.** {render.markdown(w)}\n")
        out.append(table.markdown())
        out.append("\nBold rows differ between the results; - = not recorded.\n")
        out.append(ratios.markdown())
        out.append("")
        out += [f"- **{p['label']} / A**: {render.markdown(p['interpretation'])}"
                for p in c.pairs if p["interpretation"]]
        out += [f"- {render.markdown(n)}" for n in c.notes]
        return "\n".join(out) + "\n"
    out = []
    if c.warnings:
        bar = "!" * 78
        out += [bar]
        for w in c.warnings:
            out += textwrap.wrap(f"WARNING: {render.plain(w)}", width=96, initial_indent="!! ",
                                 subsequent_indent="!!   ", break_on_hyphens=False)
        out += [bar, ""]
    out.append(table.text())
    out.append("(* = differs between the results; - = not recorded)" if any(table.marked)
               else "(- = not recorded)")
    out += ["", ratios.text(), ""]
    for line in [f"{p['label']} / A: {p['interpretation']}"
                 for p in c.pairs if p["interpretation"]]:
        out += textwrap.wrap(render.plain(line), width=100, subsequent_indent="  ")
    for n in c.notes:
        out += textwrap.wrap(f"note: {render.plain(n)}", width=100, subsequent_indent="  ")
    return "\n".join(out) + "\n"


def check_format(fmt: str) -> None:
    if fmt not in render.FORMATS:
        raise ConfigError(f"--format: {render.quoted(fmt)} is not a known format"
                          f"{render.did_you_mean(fmt, render.FORMATS)}; allowed: "
                          f"{', '.join(render.FORMATS)}")
