"""The tuned file: the configuration a search recommends, with the evidence for it.

Written atomically, versioned, and never put over another study's file without ``--force``. No
result is lost: every file replaced is kept as ``<name>.<UTC time>.bak`` (never over an older
one; the newest ``keep_backups``, 5 by default, are kept and older ones removed), and an
unvalidated result never replaces a validated file: it goes beside it, as
``<stem>.unvalidated.yaml``. A validated result written later supersedes that file: it moves
into the history (``<stem>.unvalidated.yaml.<UTC time>.bak``), so no stale result is left to
be mistaken for the current one.

Format history (``format_version``):
  1: first version: settings (threads, tf_data, env), machine, result, validation, study.
     Optional fields added within version 1 (readers ignore what they do not know):
     result.carried_by (the structured search: the knobs that carry the gain),
     validation.detectable_speedup (when the defaults are kept: the smallest win the rounds
     would have confirmed with 80% power), validation.sequential (the looks of the
     sequential final rounds) and search.declared_knobs (the declared knobs' names and
     values: readers refuse settings.knobs outside them). A defaults verdict's result.speedup,
     speedup_ci95 and p_value hold the rejected candidate's measured numbers (null when none
     was compared; p_value null when it failed during validation), no longer a made-up 1.0,
     [1, 1], 1.0.
  2: the accuracy guard: result.accuracy {metric, tolerance (null: the float-noise limit),
     deviation (the adopted configuration's, worst over its validation processes), limit,
     samples, measured, processes}, search.accuracy_infeasible (trials ruled out, with their
     deviation), and settings.precision / env.ONEDNN_DEFAULT_FPMATH_MODE (reduced precision,
     which a reader refuses without a measured deviation within the tolerance). Version 1 files
     read as before (they hold no reduced precision).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuner.base import yamlsafe
from tuner.base.files import write_text_atomic
from tuner.base.urls import mask_url, masked
from tuner.base.version import __version__
from tuner.errors import ConfigError, StudyError, StudyMismatchError

FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)

# The prefix of the attributes that hold tuner's bookkeeping in Optuna storage: a study's config,
# machine and last result, a trial's host and process. A trial's measurements (throughput,
# settings, role) go under plain names. The search writes them; show, compare and report read them.
STUDY_ATTR_PREFIX = "tuner."
# A reference trial's "role" attribute: TensorFlow's defaults, the expert rule, a screening point.
# Search trials have none.
BASELINE, EXPERT, SCREEN = "baseline", "expert", "screen"

HEADER = """\
# Tuned TensorFlow CPU configuration, written by tuner {tuner_version}.
# Use it in a job:   cfg = tuner.apply("{path}")   (first thing, before TensorFlow runs an op)
# or wrap a command: python -m tuner run --tuned {path} -- python train.py
# format_version history: 1 = first version (settings, machine, result, validation, study);
# 2 = result.accuracy (the accuracy guard's measured deviation), reduced-precision settings.
"""


def load_yaml(path: str | Path, kind: str) -> Any:
    """A result file's YAML (``kind``: "tuned" or "sizes"), through the bounded loader
    (:mod:`tuner.base.yamlsafe`: a regular file, bounded, no anchors or aliases); a folder, a
    missing file or unreadable YAML is one ConfigError naming the file."""
    return yamlsafe.load(path, kind)


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    data = load_yaml(path, "tuned")
    if isinstance(data, dict) and "format_version" not in data and "workload" in data:
        raise ConfigError(f"{path}: a study config, not a tuned file (no format_version); "
                          f"python -m tuner search --config {path} writes the tuned file")
    if not isinstance(data, dict) or "format_version" not in data:
        raise ConfigError(f"{path}: not a tuned file (no format_version)")
    version = data["format_version"]
    if version not in SUPPORTED_VERSIONS:
        raise ConfigError(f"{path}: format_version {yamlsafe.shown(version)} is not supported "
                          f"by this tuner (supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); "
                          f"upgrade tuner or re-run the search")
    settings = data.get("settings")
    if settings is None:
        raise ConfigError(f"{path}: settings: missing; expected a mapping of settings")
    if not isinstance(settings, dict):
        shown = repr(settings)
        raise ConfigError(f"{path}: settings: expected a mapping of settings, got "
                          f"{shown if len(shown) <= 80 else shown[:77] + '...'}")
    return data


def check_replaceable(path: str | Path, study_name: str, storage: str, force: bool) -> None:
    """Refuse to overwrite a file that belongs to another study, unless forced."""
    path = Path(path)
    if force or not path.exists():
        return
    try:
        existing = yamlsafe.load(path, "tuned")
        owner = existing.get("study") if isinstance(existing, dict) else None
    except ConfigError:
        owner = None
    if isinstance(owner, dict) and owner.get("name") == study_name and \
            owner.get("storage") == mask_url(storage):
        return
    which = (f"study {yamlsafe.shown(owner.get('name'))} in "
             f"{masked(yamlsafe.shown(owner.get('storage')))}" if isinstance(owner, dict)
             else "something that is not a tuned file of this study")
    raise StudyMismatchError(f"--output: {str(path)!r} already holds {which}; choose another "
                             f"--output or pass --force to replace it (it is kept as "
                             f"{path.name}.<time>.bak)")


# Plain YAML: no &anchors/*aliases when a block appears twice (readers refuse them)
_Dumper = yamlsafe.Dumper


def rounded(value: Any) -> Any:
    """Six significant digits: measurements are not more precise than that, and files stay
    readable."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def dump(data: dict[str, Any], path: str | Path) -> str:
    body = yaml.dump(rounded(data), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     width=100)
    return HEADER.format(tuner_version=__version__, path=path) + body


VALIDATED = ("tuned", "defaults")


@dataclass(frozen=True)
class Written:
    """Where a result went: ``path`` (the output, or the file beside it for an unvalidated
    result), ``backup`` (the replaced file's history copy, if one was replaced), ``kept`` (the
    validated file left as it was, when the result went beside it) and ``retired`` (the history
    copy of an unvalidated file beside the output that this validated result superseded)."""

    path: Path
    backup: Path | None
    kept: Path | None
    retired: Path | None = None


def unvalidated_path(path: str | Path) -> Path:
    """Where an unvalidated result goes when ``path`` holds a validated one."""
    path = Path(path)
    return path.with_name(f"{path.stem}.unvalidated{path.suffix}")


def verdict_of(path: str | Path) -> str | None:
    """The verdict of the file at ``path``, or None when there is none to read."""
    try:
        existing = yamlsafe.load(path, "tuned")
    except ConfigError:
        return None
    verdict = existing.get("verdict") if isinstance(existing, dict) else None
    return verdict if isinstance(verdict, str) else None


def write(data: dict[str, Any], path: str | Path, *, study_name: str, storage: str,
          force: bool, keep_backups: int = 5) -> Written:
    """Write atomically (see the module docstring for where, and what is kept). An OSError
    becomes one line naming the file; the previous file is then whole, and no temporary file is
    left."""
    path = Path(path)
    check_replaceable(path, study_name, storage, force)
    kept = None
    if data.get("verdict") not in VALIDATED and verdict_of(path) in VALIDATED:
        kept, path = path, unvalidated_path(path)
    text = dump(data, path)
    yamlsafe.parse(text, str(path), "tuned", aliases=False)  # never write what we cannot read
    backup = None
    try:
        if path.exists():
            backup = keep_history(path)
        # the umask's mode; 0600 when the storage URL had credentials: it is masked, but the
        # user and host it names are for its owner only
        write_text_atomic(path, text, private=names_credentials(storage))
    except OSError as exc:
        if backup is not None:  # the previous file is still in place: no history to keep
            try:
                backup.unlink()
            except OSError:
                pass
        raise StudyError(f"--output: cannot write {path}: {exc.strerror or exc}; the previous "
                         f"file is unchanged and the trials are kept in the study") from None
    retired = _retire_unvalidated(path) if data.get("verdict") in VALIDATED else None
    backup = prune_history(path, keep_backups, backup)
    if retired is not None:
        retired = prune_history(unvalidated_path(path), keep_backups, retired)
    return Written(path, backup, kept, retired)


def _retire_unvalidated(path: Path) -> Path | None:
    """Move the unvalidated result beside ``path`` (just written, validated) into the history;
    its history copy, or None when there was none. Best effort: the validated file is written,
    and a stale file that cannot be moved stays where it is, whole."""
    stale = unvalidated_path(path)
    if not stale.is_file() or stale.is_symlink():
        return None
    try:
        retired = keep_history(stale)
    except OSError:
        return None
    try:
        stale.unlink()
    except OSError:
        retired.unlink(missing_ok=True)
        return None
    return retired


def history_of(path: Path) -> list[Path]:
    """The history copies of ``path`` (:func:`keep_history`), oldest first."""
    return [p for _, p in _history(path)]


def _history(path: Path) -> list[tuple[tuple[str, int], Path]]:
    pattern = re.compile(re.escape(path.name) + r"\.(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d)"
                         r"(?:\.(\d+))?\.bak")
    found = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    for name in names:
        match = pattern.fullmatch(name)
        if match:
            found.append(((match.group(1), int(match.group(2) or 1)), path.parent / name))
    return sorted(found)


def prune_history(path: Path, keep: int, backup: Path | None = None) -> Path | None:
    """Remove all but the newest ``keep`` history copies of ``path``; returns ``backup`` if it
    is still there (None once pruned, with ``keep`` 0). Best effort: a copy that cannot be
    removed stays, and the file just written is never touched."""
    copies = history_of(path)
    for old in copies[:max(len(copies) - keep, 0)]:
        try:
            old.unlink()
        except OSError:
            pass
    return backup if backup is not None and os.path.lexists(backup) else None


def keep_history(path: Path, now: float | None = None) -> Path:
    """Keep the file at ``path`` as ``<name>.<UTC time>.bak`` (``.2.bak``, ``.3.bak``... within
    one second), never over an existing file; returns the copy's path. A hard link where the
    file system allows it: instant, and the original's mode and times come along."""
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(time.time() if now is None else now))
    # after the newest copy of this second: a name freed by pruning is not taken again, so the
    # names stay in the order the copies were made
    first = 1 + max((n for (s, n), _ in _history(path) if s == stamp), default=0)
    for n in range(first, first + 10_000):
        backup = path.with_name(f"{path.name}.{stamp}{'' if n == 1 else f'.{n}'}.bak")
        try:
            os.link(path, backup, follow_symlinks=False)
            return backup
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                                 errno.EMLINK, errno.ENOSYS):
                raise
        with open(path, "rb") as src:  # a file system without hard links: an exclusive copy
            try:
                dst = open(backup, "xb")
            except FileExistsError:
                continue
            try:
                with dst:
                    os.chmod(dst.fileno(), 0o600)  # private until it has the original's mode
                    shutil.copyfileobj(src, dst)
                shutil.copystat(path, backup)
            except BaseException:
                os.unlink(backup)  # ours ("xb" made it): a half copy is no history
                raise
        return backup
    raise FileExistsError(errno.EEXIST, "too many backups in one second", str(path))
def names_credentials(storage: str) -> bool:
    """Whether a storage URL carries a secret (a password, a secret-named query parameter)."""
    return mask_url(storage) != storage
