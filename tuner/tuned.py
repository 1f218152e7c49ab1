"""The tuned file: the configuration a search recommends, with the evidence for it.

Written atomically, versioned, and never put over another study's file without ``--force`` (the
file it replaces is kept as ``<name>.bak``).

Format history (``format_version``):
  1: first version: settings (threads, tf_data, env), machine, result, validation, study.
     Optional fields added within version 1: validation.detectable_speedup (when the defaults
     are kept: the smallest win the rounds would have confirmed with 80% power) and
     validation.sequential (the looks of the sequential final rounds).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from ._version import __version__
from .errors import ConfigError, StudyMismatchError
from .files import write_text_atomic
from .urls import mask_url

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

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
# format_version history: 1 = first version (settings, machine, result, validation, study).
"""


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a tuned YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: tuned file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable tuned file: "
                          f"{str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise ConfigError(f"{path}: not a tuned file (no format_version)")
    version = data["format_version"]
    if version not in SUPPORTED_VERSIONS:
        raise ConfigError(f"{path}: format_version {version!r} is not supported by this tuner "
                          f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade tuner "
                          f"or re-run the search")
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
        existing = yaml.safe_load(path.read_text())
        owner = existing.get("study") if isinstance(existing, dict) else None
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        owner = None
    if isinstance(owner, dict) and owner.get("name") == study_name and \
            owner.get("storage") == mask_url(storage):
        return
    which = (f"study {owner.get('name')!r} in {owner.get('storage')}" if isinstance(owner, dict)
             else "something that is not a tuned file of this study")
    raise StudyMismatchError(f"--output: {str(path)!r} already holds {which}; choose another "
                             f"--output or pass --force to replace it (it is kept as .bak)")


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no &anchors/*aliases when a block appears twice, short float lists inline."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


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


def write(data: dict[str, Any], path: str | Path, *, study_name: str, storage: str,
          force: bool) -> Path | None:
    """Write atomically; returns the backup path when a previous file was replaced."""
    path = Path(path)
    check_replaceable(path, study_name, storage, force)
    text = dump(data, path)
    yaml.safe_load(text)  # never write a file we could not read back
    backup = None
    if path.exists():
        backup = path.with_name(path.name + ".bak")
        shutil.copy2(path, backup)
    write_text_atomic(path, text)
    if not names_credentials(storage):
        os.chmod(path, 0o644)
    # else the file stays as mkstemp made it, 0600: its storage URL is masked, but the user and
    # host it names are for its owner only
    return backup


def names_credentials(storage: str) -> bool:
    """Whether a storage URL carries a secret (a password, a secret-named query parameter)."""
    return mask_url(storage) != storage
