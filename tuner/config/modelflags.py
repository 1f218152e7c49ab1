"""``search --model PATH`` / ``diagnose --model PATH``: a study config generated from a model file
and a few flags, with no config file and no code.

Everything here is the parent's: the path is checked on the file system only (TensorFlow is
never imported here; the child loads the model, :mod:`tuner.child.model`). The generated config is
the one a user could have written (``workload: {model: ..., batch_size: ...}``); ``search``
writes it beside the tuned file, named after it (``results/<name>/tuned.config.yaml``, or
``out/m.config.yaml`` for ``--output out/m.yaml``), so ``search --config`` on it resumes the same
study, or edits it by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tuner.config as config_mod
from tuner.base import yamlsafe
from tuner.base.files import write_text_atomic
from tuner.config import kerascheck
from tuner.errors import ConfigError, TunerError

# before 0.x the generated config was always ``config.yaml`` beside the output, so two models
# tuned into one folder collided; an old one that still says the same is used as it is
LEGACY_CONFIG_NAME = "config.yaml"


def config_path_for(output: str | Path) -> Path:
    """Where the generated config of a search writing ``output`` goes: beside it, named after it
    (``out/m.yaml`` -> ``out/m.config.yaml``), so any number of models share one folder."""
    out = Path(output)
    stem = out.name[:-len(out.suffix)] if out.suffix in (".yaml", ".yml") else out.name
    return out.parent / f"{stem}.config.yaml"


@dataclass(frozen=True)
class ModelFlags:
    """The command line's model-file flags (None: not given)."""

    model: str
    data: str | None = None
    mode: str | None = None
    signature: str | None = None
    batch_size: int | None = None
    batch_sizes: list[int] | None = None
    input_shapes: tuple[str, ...] = ()
    study_name: str | None = None
    output: str | None = None


def parse_shape_flag(text: str) -> tuple[str, list[int]]:
    """``name=1x224x224x3`` -> ("name", [1, 224, 224, 3]), or a ConfigError naming the flag."""
    name, sep, dims = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--input-shape: expected NAME=DIMS like image=1x224x224x3, "
                          f"got {text!r}")
    return name.strip(), config_mod.shape_of(dims, f"--input-shape {name.strip()}")


def parse_batch_sizes(text: str) -> list[int]:
    """``1,8,32,128`` -> [1, 8, 32, 128] (distinct sizes >= 1)."""
    parts = [p.strip() for p in text.split(",")]
    if not all(re.fullmatch(r"[0-9]+", p) and int(p) >= 1 for p in parts):
        raise ConfigError(f"--batch-sizes: expected sizes >= 1 separated by commas, like "
                          f"1,8,32,128, got {text!r}")
    sizes = [int(p) for p in parts]
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"--batch-sizes: {text!r} lists a size twice")
    return sizes


def study_name_of(path: Path) -> str:
    """A study name from the model's file or directory name: ``resnet50.keras`` -> ``resnet50``;
    characters a study name cannot hold become ``-``."""
    stem = path.name if path.is_dir() else path.stem
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", stem).lstrip("._-")[:100]
    return name or "model"


def generated(flags: ModelFlags, cwd: Path | None = None) -> tuple[dict[str, Any], Path]:
    """The config document for ``flags`` and where it goes (beside the tuned file). Every flag is
    checked here, so a bad one is an error before any child starts and before anything is
    written."""
    cwd = cwd or Path.cwd()
    raw = Path(flags.model).expanduser()
    path = (raw if raw.is_absolute() else cwd / raw).resolve()
    fmt = config_mod.model_format(path, "--model")
    if flags.signature is not None and fmt != "saved_model":
        raise ConfigError(f"--signature: {flags.signature!r}: {flags.model} is a Keras file; "
                          f"signatures belong to SavedModel directories")
    if flags.mode == "train" and fmt != "keras":
        raise ConfigError("--mode train: needs a compiled .keras model; a SavedModel is measured "
                          "in mode predict")
    shapes: dict[str, str] = {}
    for text in flags.input_shapes:
        name, dims = parse_shape_flag(text)
        if name in shapes:
            raise ConfigError(f"--input-shape: {name!r} is given twice")
        shapes[name] = "x".join(map(str, dims))
    if flags.data is not None:
        for flag, value in (("--batch-size", flags.batch_size),
                            ("--batch-sizes", flags.batch_sizes),
                            ("--input-shape", shapes or None)):
            if value is not None:
                raise ConfigError(f"{flag}: applies to the inputs tuner generates; with --data "
                                  f"your dataset's batches are used as they are")
    elif flags.batch_sizes is not None and flags.mode == "train":
        raise ConfigError("--batch-sizes: searched in mode predict only (in training the batch "
                          "size changes what is learnt, not only how fast)")
    name = config_mod.check_study_name(flags.study_name, "--study-name") \
        if flags.study_name is not None else study_name_of(path)
    workload: dict[str, Any] = {("saved_model" if fmt == "saved_model" else "model"): str(path)}
    if fmt == "saved_model":
        workload["signature"] = flags.signature or config_mod.DEFAULT_SIGNATURE
    if flags.data is not None:
        workload["data"] = _absolute_builder(flags.data, cwd)
    else:
        workload["batch_size"] = flags.batch_size or config_mod.DEFAULT_BATCH_SIZE
        if shapes:
            workload["input_shapes"] = shapes
    workload["mode"] = flags.mode or "predict"
    doc: dict[str, Any] = {"workload": workload}
    if flags.batch_sizes:
        doc["space"] = {"batch_size": list(flags.batch_sizes)}
    doc["study"] = {"name": name}
    output = flags.output or config_mod.default_output(name)
    config_mod.check_output(output, "--output")
    if flags.output is not None:
        doc["output"] = flags.output
    return doc, _where(doc, output)


def _where(doc: dict[str, Any], output: str) -> Path:
    """The config's path for ``output``; an old layout's ``config.yaml`` beside it when it holds
    this very config and the new name is not taken, so an earlier study resumes as it was."""
    where = config_path_for(output)
    legacy = Path(output).parent / LEGACY_CONFIG_NAME
    if where.exists() or not legacy.is_file():
        return where
    try:
        same = yamlsafe.load(legacy, "config") == doc
    except TunerError:
        same = False
    return legacy if same else where


def _absolute_builder(spec: str, cwd: Path) -> str:
    """``file.py:fn`` relative to where the command runs -> an absolute file (the generated
    config lives elsewhere); a ``module:fn`` stays as it is."""
    target, sep, func = spec.rpartition(":")
    if sep and target.endswith(".py") and not Path(target).is_absolute():
        return f"{(cwd / target).resolve()}:{func}"
    return spec


def config_for(flags: ModelFlags, cwd: Path | None = None) -> tuple[config_mod.Config, str, Path]:
    """The checked :class:`Config` of ``flags``, the config file's text and its path. Nothing is
    written."""
    kerascheck.check("--model")   # the flag named, before anything else about the file
    doc, where = generated(flags, cwd)
    text = render(doc, where)
    cfg = config_mod.parse(yamlsafe.parse(text, str(where), "config", aliases=False), where)
    return cfg, text, where


def render(doc: dict[str, Any], where: Path) -> str:
    """The config file's text: what it is and how to resume, then the YAML."""
    return (f"# generated by `python -m tuner search --model`: resume the same study (or edit "
            f"this file first) with\n# python -m tuner search --config {where}\n"
            + yamlsafe.dump(doc, sort_keys=False, default_flow_style=False))


class Written:
    """The generated config on disk: ``created`` when this run wrote it (removed again with
    :meth:`undo` when the search fails before it started), else it was there already."""

    def __init__(self, path: Path, created: bool, made_dirs: list[Path]) -> None:
        self.path, self.created, self.made_dirs = path, created, made_dirs

    def undo(self) -> None:
        if not self.created:
            return
        self.path.unlink(missing_ok=True)
        for folder in self.made_dirs:
            try:
                folder.rmdir()
            except OSError:
                break


def write(text: str, where: Path) -> Written:
    """Write the generated config at ``where`` unless the same text is there. A different file
    there is the user's (edited by hand, or another study's): kept, and an error says how to
    go on."""
    if where.exists():
        try:
            same = where.read_text() == text
        except (OSError, UnicodeDecodeError):
            same = False
        if same:
            return Written(where, created=False, made_dirs=[])
        raise ConfigError(f"{where}: exists and differs from the config these flags make (edited "
                          f"by hand, or another model's); resume it with python -m tuner search "
                          f"--config {where}, or choose another --study-name or --output")
    made = [p for p in [where.parent, *where.parent.parents] if not p.exists()]
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(where, text)
    except OSError as exc:
        raise TunerError(f"{where}: cannot write the generated config: "
                         f"{exc.strerror or exc}") from None
    return Written(where, created=True, made_dirs=made)
