"""The sizes file (``results/<name>/sizes.yaml``): one row per CPU count, and a recommendation.

Written by ``python -m tuner size`` (:mod:`tuner.search.sizing`), atomically, with every replaced
file kept as ``<name>.<UTC time>.bak`` (the newest ``--keep-backups``, 5 by default); read by
``show``, ``report`` and, one row at a time (``--size K``), by ``tuner.apply()``, ``python -m tuner
run`` and ``export``. The file travels like a tuned file, so :func:`read` treats it as untrusted
input: every row's ``settings`` is checked by the tuned file's own rules
(:func:`tuner.tuned.reader.check_settings`), and must pin the process to exactly that row's number
of CPUs; anything else is one line naming the file, the row and the field.

Format history (``format_version``, with ``kind: sizes``):
  1: first version: ladder, sizes (cpus, verdict, settings, throughput {median, ci95}, per_cpu,
     latency_ms {p50, p95}, peak_rss_mb, cpu_saturation, ...), recommendation, machine.
     Optional within version 1: a row's ``accuracy`` (the accuracy guard's block, as a tuned
     file's result.accuracy), required for a row whose settings turn on reduced precision.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner.base import yamlsafe
from tuner.base.files import write_text_atomic
from tuner.base.version import __version__
from tuner.errors import ConfigError, StudyError
from tuner.tuned import reader as tunedfile
from tuner.tuned import store

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
KIND = "sizes"
ROW_VERDICTS = ("tuned", "defaults", "failed")
MAX_ROWS = 256   # one per CPU count of the ladder
FILE_NAME = "sizes.yaml"

HEADER = """\
# TensorFlow CPU sizes: the best settings per CPU count, written by tuner {tuner_version}.
# One row:  python -m tuner run --tuned {path} --size K -- python serve.py
#           cfg = tuner.apply("{path}", size=K)
#           python -m tuner export {path} --size K --format k8s
# format_version history: 1 = first version (ladder, sizes, recommendation, machine).
"""


def default_output(study_name: str) -> str:
    return f"results/{study_name}/{FILE_NAME}"


# -- writing ----------------------------------------------------------------------------------

def dump(doc: dict[str, Any], path: str | Path) -> str:
    body = yaml.dump(store.rounded(doc), Dumper=store._Dumper, sort_keys=False,
                     default_flow_style=False, width=100)
    return HEADER.format(tuner_version=__version__, path=path) + body


@dataclass(frozen=True)
class Written:
    path: Path
    backup: Path | None


def write(doc: dict[str, Any], path: str | Path, keep_backups: int = 5) -> Written:
    """Write ``doc`` atomically; a replaced file is kept as history first. An OSError becomes
    one line naming the file (the previous file is then whole)."""
    path = Path(path)
    text = dump(doc, path)
    yamlsafe.parse(text, str(path), "sizes", aliases=False)  # never write what we cannot read
    backup = None
    try:
        if path.exists():
            backup = store.keep_history(path)
        write_text_atomic(path, text)   # the umask's mode, set before the rename
    except OSError as exc:
        if backup is not None:
            try:
                backup.unlink()
            except OSError:
                pass
        raise StudyError(f"--output: cannot write {path}: {exc.strerror or exc}; the previous "
                         f"file is unchanged and the trials are kept in the studies") from None
    return Written(path, store.prune_history(path, keep_backups, backup))


# -- reading (untrusted input) ------------------------------------------------------------------

@dataclass(frozen=True)
class SizesFile:
    """A sizes file that passed :func:`read`."""

    path: str
    doc: dict[str, Any]
    allowed_env: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.doc["sizes"]

    @property
    def recommendation(self) -> dict[str, Any]:
        return self.doc.get("recommendation") or {}

    def counts(self) -> list[int]:
        return [row["cpus"] for row in self.rows]

    def row(self, cpus: int) -> dict[str, Any]:
        for row in self.rows:
            if row["cpus"] == cpus:
                return row
        raise ConfigError(f"{self.path}: --size {cpus}: no row for {cpus} CPUs; the file has "
                          f"rows for {', '.join(map(str, self.counts()))}")


def is_sizes_file(path: str | Path) -> bool:
    """Whether ``path`` looks like a sizes file (``kind: sizes``); False when unreadable."""
    try:  # never blocks on a FIFO: a non-regular file is no sizes file (the reader says why)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError):
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, 1 << 16)
    except OSError:
        return False
    finally:
        os.close(fd)
    return b"\nkind: sizes" in head or head.startswith(b"kind: sizes")


def _load(path: str | Path) -> dict[str, Any]:
    data = store.load_yaml(path, "sizes")
    if isinstance(data, dict) and "kind" not in data and "verdict" in data and "settings" in data:
        raise ConfigError(f"{path}: a tuned file, not a sizes file (python -m tuner size writes "
                          f"those); --size K / size=K is for sizes files: drop it")
    if isinstance(data, dict) and "kind" not in data and "workload" in data:
        raise ConfigError(f"{path}: a study config, not a sizes file; python -m tuner size "
                          f"--config {path} writes one")
    if isinstance(data, dict) and data.get("kind") == KIND and \
            ("verdict" in data or "settings" in data):
        raise ConfigError(f"{path}: both a sizes file and a tuned file (it has "
                          f"{'verdict' if 'verdict' in data else 'settings'}: at the top); a "
                          f"file is one or the other: refused")
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ConfigError(f"{path}: not a sizes file (no 'kind: sizes'); sizes files are written "
                          f"by python -m tuner size")
    version = data.get("format_version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise ConfigError(f"{path}: format_version {_short(version)} is not supported by this "
                          f"tuner "
                          f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade "
                          f"tuner or re-run python -m tuner size")
    return data


# no measurement reaches this (a peak of 10^12 MiB, a throughput of 10^15 samples/s): a bound
# that keeps the arithmetic on it finite (memory requests, costs)
MAXIMUM = 1e12


def _number(value: Any, where: str, *, minimum: float = 0.0, allow_none: bool = False,
            strictly_above: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value <= MAXIMUM \
        and (value > minimum if strictly_above else value >= minimum)
    if not ok:
        bound = (f"> {minimum:g}" if strictly_above else f">= {minimum:g}") + \
            f" and <= {MAXIMUM:g}"
        raise ConfigError(f"{where}: expected a number {bound}{' or null' if allow_none else ''}"
                          f", got {_short(value)}")
    return float(value)


def _count(value: Any, where: str, minimum: int = 1) -> int:
    if type(value) is not int or value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {_short(value)}")
    return value


def _text(value: Any, where: str) -> None:
    if value is not None and (not isinstance(value, str)
                              or tunedfile._CONTROL.search(value)):
        raise ConfigError(f"{where}: expected a line of text, got {_short(value)}")


def _short(value: Any) -> str:
    return yamlsafe.shown(value)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_short(value)}")
    return value


def check_row(row: Any, index: int, path: str, allow_env: Iterable[str] = ()) -> dict[str, Any]:
    """One row of ``sizes:``, field by field (see the module docstring)."""
    where = f"{path}: sizes[{index}]"
    row = _mapping(row, where)
    cpus = _count(row.get("cpus"), f"{where}.cpus")
    where = f"{path}: sizes[{index}] (cpus {cpus})"
    verdict = row.get("verdict")
    if verdict not in ROW_VERDICTS:
        raise ConfigError(f"{where}.verdict: expected one of {', '.join(ROW_VERDICTS)}, got "
                          f"{_short(verdict)}")
    _text(row.get("reason"), f"{where}.reason")
    if verdict == "failed":
        return row
    # check_settings names "<path>: settings.<field>"
    tunedfile.check_settings(row.get("settings"), where, allow_env=allow_env)
    tunedfile.check_precision_evidence(
        {"settings": row["settings"], "result": {"accuracy": row.get("accuracy")}}, where)
    pinned = row["settings"].get("cpus")
    if not isinstance(pinned, list) or len(pinned) != cpus:
        raise ConfigError(f"{where}: settings.cpus: expected the {cpus} CPU(s) this row is "
                          f"pinned to, got {_short(pinned)}")
    instances = row["settings"].get("instances", 1)
    if isinstance(instances, dict) and instances.get("cpus"):
        outside = sorted({c for s in instances["cpus"] for c in s} - set(pinned))
        if outside:
            raise ConfigError(f"{where}: settings.instances.cpus: CPUs {outside} are outside the "
                              f"row's CPU set {pinned}")
    tp = _mapping(row.get("throughput"), f"{where}.throughput")
    _number(tp.get("median"), f"{where}.throughput.median", strictly_above=True)
    ci = tp.get("ci95")
    if not isinstance(ci, list) or len(ci) != 2:
        raise ConfigError(f"{where}.throughput.ci95: expected [low, high], got {_short(ci)}")
    for i, bound in enumerate(ci):
        _number(bound, f"{where}.throughput.ci95[{i}]")
    _number(row.get("per_cpu"), f"{where}.per_cpu")
    latency = _mapping(row.get("latency_ms"), f"{where}.latency_ms")
    for key in ("p50", "p95"):
        _number(latency.get(key), f"{where}.latency_ms.{key}", allow_none=True)
    for key in ("peak_rss_mb", "cpu_saturation", "cost_per_million"):
        _number(row.get(key), f"{where}.{key}", allow_none=True)
    return row


def _check_workload(workload: Any, where: str) -> None:
    if workload is None:
        return
    workload = _mapping(workload, f"{where}: workload")
    for key in ("model", "data", "mode", "config"):
        _text(workload.get(key), f"{where}: workload.{key}")
    batch = workload.get("batch_size")
    if batch is not None:
        _count(batch, f"{where}: workload.batch_size")


def _check_recommendation(rec: Any, path: str, counts: list[int]) -> None:
    if rec is None:
        return
    where = f"{path}: recommendation"
    rec = _mapping(rec, where)
    for key in ("target_throughput", "cpu_hour_price", "latency_budget_ms"):
        _number(rec.get(key), f"{where}.{key}", allow_none=True)
    _text(rec.get("summary"), f"{where}.summary")
    choice = rec.get("choice")
    if choice is not None:
        choice = _mapping(choice, f"{where}.choice")
        size = _count(choice.get("cpus"), f"{where}.choice.cpus")
        if size not in counts:
            raise ConfigError(f"{where}.choice.cpus: {size} is not a row of the file (rows: "
                              f"{', '.join(map(str, counts))})")
        _count(choice.get("replicas"), f"{where}.choice.replicas")
        _count(choice.get("total_cpus"), f"{where}.choice.total_cpus")
    for key in ("most_efficient", "fastest"):
        named = rec.get(key)
        if named is not None:
            named = _mapping(named, f"{where}.{key}")
            if named.get("cpus") not in counts:
                raise ConfigError(f"{where}.{key}.cpus: expected one of the rows "
                                  f"({', '.join(map(str, counts))}), got "
                                  f"{_short(named.get('cpus'))}")
    options = rec.get("options")
    if options is not None:
        if not isinstance(options, list):
            raise ConfigError(f"{where}.options: expected a list, got {_short(options)}")
        for i, option in enumerate(options):
            option = _mapping(option, f"{where}.options[{i}]")
            _count(option.get("cpus"), f"{where}.options[{i}].cpus")
            _count(option.get("replicas"), f"{where}.options[{i}].replicas")
    excluded = rec.get("excluded")
    if excluded is not None:
        if not isinstance(excluded, list):
            raise ConfigError(f"{where}.excluded: expected a list, got {_short(excluded)}")
        for i, item in enumerate(excluded):
            item = _mapping(item, f"{where}.excluded[{i}]")
            _count(item.get("cpus"), f"{where}.excluded[{i}].cpus")
            _text(item.get("reason"), f"{where}.excluded[{i}].reason")


def read(path: str | Path, *, allow_env: Iterable[str] = ()) -> SizesFile:
    """Read and check the sizes file at ``path``; a :class:`ConfigError` (one line) for anything
    that is not a sizes file tuner could have written."""
    where = str(path)
    if "\x00" in where:
        raise ConfigError(f"{where!r}: a path cannot contain a NUL byte")
    extra = tunedfile.allowed_names(allow_env)
    doc = _load(path)
    rows = doc.get("sizes")
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{where}: sizes: expected a non-empty list of rows, got "
                          f"{_short(rows)}")
    if len(rows) > MAX_ROWS:
        raise ConfigError(f"{where}: sizes: {len(rows)} rows; a sizes file has at most "
                          f"{MAX_ROWS}")
    seen: set[int] = set()
    for index, row in enumerate(rows):
        cpus = row.get("cpus") if isinstance(row, dict) else None
        if type(cpus) is int and cpus in seen:
            raise ConfigError(f"{where}: sizes[{index}].cpus: {cpus} appears twice")
        check_row(row, index, where, extra)
        seen.add(row["cpus"])
    _text(doc.get("summary"), f"{where}: summary")
    _text(doc.get("interrupted"), f"{where}: interrupted")
    _check_workload(doc.get("workload"), where)
    ladder = doc.get("ladder")
    if ladder is not None and not (isinstance(ladder, list) and len(ladder) <= MAX_ROWS
                                   and all(type(n) is int and n >= 1 for n in ladder)):
        raise ConfigError(f"{where}: ladder: expected a list of CPU counts, got {_short(ladder)}")
    tunedfile.check_machine_block(doc.get("machine"), where)
    _check_recommendation(doc.get("recommendation"), where, [r["cpus"] for r in rows])
    return SizesFile(path=where, doc=doc, allowed_env=extra)


def row_as_tuned(sizes: SizesFile, cpus: int) -> tunedfile.TunedFile:
    """Row ``cpus`` as a tuned file: what ``apply``, ``run`` and ``export`` act on. Its machine
    block says the settings were measured on ``cpus`` CPUs (the row's pinned set)."""
    row = sizes.row(cpus)
    if row["verdict"] == "failed":
        ok = [str(r["cpus"]) for r in sizes.rows if r["verdict"] != "failed"]
        raise ConfigError(f"{sizes.path}: --size {cpus}: that size failed in the size run "
                          f"({row.get('reason') or 'no reason recorded'}); sizes with settings: "
                          f"{', '.join(ok) or 'none'}")
    tunedfile.check_declared_space(row["settings"], tunedfile.declared_space(sizes.doc, sizes.path),
                                   f"{sizes.path}: sizes (cpus {cpus})")
    machine = dict(sizes.doc.get("machine") or {})
    machine["usable_cpus"] = cpus
    doc = {"format_version": store.FORMAT_VERSION, "verdict": row["verdict"],
           "summary": f"size {cpus} CPU(s) of {sizes.path}", "settings": row["settings"],
           "machine": machine, "workload": sizes.doc.get("workload"),
           "result": {"throughput": row["throughput"], "latency_ms": row.get("latency_ms"),
                      "peak_rss_mb": row.get("peak_rss_mb"),
                      **({"accuracy": row["accuracy"]} if row.get("accuracy") else {})},
           "size": {"cpus": cpus, "file": sizes.path}}
    return tunedfile.TunedFile(path=sizes.path, doc=doc, allowed_env=sizes.allowed_env)


def read_row(path: str | Path, cpus: int, *, allow_env: Iterable[str] = ()) -> tunedfile.TunedFile:
    """The row of ``cpus`` CPUs of the sizes file at ``path``, as a tuned file."""
    return row_as_tuned(read(path, allow_env=allow_env), cpus)


def replicas_for(sizes: SizesFile, cpus: int) -> tuple[int, str] | None:
    """The recommended replica count of size ``cpus`` for the file's target, and why."""
    rec = sizes.recommendation
    target = rec.get("target_throughput")
    if target is None:
        return None
    for option in rec.get("options") or []:
        if option.get("cpus") == cpus:
            chosen = (rec.get("choice") or {}).get("cpus") == cpus
            return option["replicas"], (f"{option['replicas']} replicas of {cpus} CPU(s) reach "
                                        f"the target of {target:g} samples/s"
                                        + (" (the recommended size)" if chosen else ""))
    return None
