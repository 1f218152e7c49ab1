"""The study config's sections as frozen dataclasses (``Workload``, ``Search``, ``Measure``,
``Validate``, ``Objective``, ``Accuracy``) and the whole ``Config``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MODES = ("predict", "train", "data")
SAMPLERS = ("auto", "grid", "tpe", "random", "structured")
OBJECTIVES = ("throughput", "latency_p50", "latency_p95")


@dataclass(frozen=True)
class Workload:
    model: str | None          # "file.py:function" or "package.module:function"; a model file
    data: str | None           # "file.py:function"; None: a model file's inputs are generated
    mode: str
    base_dir: str              # directory of the config file: relative builder files start here
    # a model file (model: its absolute path): "keras" (.keras, .h5) or "saved_model"; None for
    # builder functions. Inputs are generated from its signature unless data is given.
    model_format: str | None = None
    signature: str | None = None          # the SavedModel signature called
    batch_size: int | None = None         # the generated inputs' batch
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # by input name

    @property
    def generated(self) -> bool:
        """Whether tuner generates the inputs (a model file without data)."""
        return self.model_format is not None and self.data is None

    def describe(self) -> str:
        """What the preflight builds, for its first line."""
        if self.model_format is None:
            return f"{self.model or '(no model)'} and {self.data}"
        inputs = "generated inputs" if self.data is None else self.data
        return f"{self.model} ({self.model_format}) with {inputs}"


@dataclass(frozen=True)
class Search:
    n_trials: int = 24          # trials this run adds, as in Optuna
    max_trials: int | None = None  # study-wide cap: stop once the study holds this many trials
    timeout: float | None = None   # seconds for the whole run, validation included
    # wall time for the whole run, split by the tool between search and validation, which may
    # also stop the search early (tuner/budget.py); in the file "10m", "90s", "1h" or seconds
    budget: float | None = None
    trial_timeout: float = 180.0   # seconds one child may take, start-up to result
    sampler: str = "auto"
    seed: int | None = 0
    pruning: bool = True
    prune_ratio: float = 0.5    # prune a trial measuring below this share of the best so far
    # Several workers sharing one study (see tuner/search/shared.py): a worker whose heartbeat is
    # older than grace_period seconds is taken for dead, and its trial is failed and retried.
    heartbeat_interval: int = 10
    grace_period: int = 60
    allow_other_machines: bool = False  # join a study recorded on another machine type


@dataclass(frozen=True)
class Measure:
    warmup_seconds: float = 3.0    # at most: warm-up ends once the step rate is stable
    min_warmup_steps: int = 3
    window_seconds: float = 2.0
    windows: int = 5


# an unset validate.max_rounds is this many times validate.rounds
EXTEND_BY = 3


@dataclass(frozen=True)
class Validate:
    candidates: int = 3         # best distinct trials screened; the fastest meets the baseline
    screen_rounds: int = 2      # interleaved rounds to pick the winner among candidates
    rounds: int = 5             # interleaved rounds winner vs baseline at the first look
    # An inconclusive first look is extended, in at most `looks` looks, to as many rounds as a
    # 1.10x win needs for 80% power at the noise measured, but never past `max_rounds` (at 10%
    # noise per process the adoption rule needs about 28 rounds: docs/methodology.md). Unset, it
    # is 3 x `rounds`; equal to `rounds`, one look. Either way the verdict says which win the
    # rounds run could have detected.
    max_rounds: int = None  # type: ignore[assignment]
    looks: int = 3
    alpha: float = 0.05         # significance level for "faster than TensorFlow's defaults"
    # Smallest speedup adopted. Identical configurations measured minutes apart in fresh
    # processes drifted by up to ~4% on the 2-core benchmark machines; below that, "faster" is
    # as likely to be drift as a real gain.
    min_speedup: float = 1.05

    def __post_init__(self) -> None:
        if self.max_rounds is None:
            object.__setattr__(self, "max_rounds", EXTEND_BY * self.rounds)


@dataclass(frozen=True)
class Objective:
    # throughput: samples/s, higher is better. latency_p50 / latency_p95: that percentile of one
    # step's wall time (ms), lower is better (online serving).
    metric: str = "throughput"
    # With throughput: only configurations whose p95 step latency stays under this count.
    latency_budget_ms: float | None = None

    @property
    def percentile(self) -> str | None:
        """"p50" / "p95" for latency objectives, else None."""
        return self.metric.split("_", 1)[1] if self.metric.startswith("latency_") else None

    def describe(self) -> str:
        if self.percentile:
            return f"lowest {self.percentile} step latency"
        if self.latency_budget_ms is not None:
            return f"highest throughput with p95 step latency under {self.latency_budget_ms:g} ms"
        return "highest throughput"


ACCURACY_METRICS = ("rel_l2", "max_abs", "top1")
# the fixed input samples the accuracy guard compares every candidate's outputs on
GUARD_SAMPLES = 16


@dataclass(frozen=True)
class Accuracy:
    """The accuracy guard (docs/methodology.md, "The accuracy guard"): every measured child
    feeds the reference's fixed input samples and records how far its outputs are from the
    reference's (TensorFlow's defaults). ``tolerance`` None: the limit is float noise and no
    reduced-precision knob is searched. rel_l2 and max_abs are ceilings; top1 (the share of
    samples whose top-scoring class agrees) is a floor, 1 - tolerance."""

    metric: str = "rel_l2"
    tolerance: float | None = None
    train: bool = False          # in train mode, search precision knobs (loss after N steps)
    samples: int = GUARD_SAMPLES

    def allows_precision(self, mode: str) -> bool:
        """Whether reduced-precision knobs may be searched in workload ``mode``."""
        return self.tolerance is not None and (mode != "train" or self.train)


@dataclass(frozen=True)
class Config:
    path: str
    workload: Workload
    search: Search = field(default_factory=Search)
    measure: Measure = field(default_factory=Measure)
    validate: Validate = field(default_factory=Validate)
    space: dict[str, Any] = field(default_factory=dict)
    # declared knobs: name -> candidate values, passed to the builders that accept them
    knobs: dict[str, list[Any]] = field(default_factory=dict)
    objective: Objective = field(default_factory=Objective)
    accuracy: Accuracy = field(default_factory=Accuracy)
    study_name: str = "study"
    storage: str = "sqlite:///results/study.db"
    output: str = "results/study/tuned.yaml"
    force: bool = False
    keep_backups: int = 5          # --keep-backups: history copies kept per replaced file

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> dict[str, Any]:
        """What must stay the same for a resumed study to mean the same thing."""
        wl = self.workload
        model_file = {"format": wl.model_format, "signature": wl.signature,
                      "batch_size": wl.batch_size, "input_shapes": dict(wl.input_shapes)} \
            if wl.model_format else {}
        return {
            "workload": {"model": wl.model, "data": wl.data, "mode": wl.mode, **model_file},
            "objective": dataclasses.asdict(self.objective),
            "measure": dataclasses.asdict(self.measure),
        }
