"""The accuracy guard: how far a candidate's outputs are from TensorFlow's defaults.

The preflight child (TensorFlow's defaults, the reference) takes a fixed set of N input samples
from the workload's own data, computes the model's outputs on them and saves both (an ``.npz``
file the parent keeps per machine type). Every measuring child, after its windows, feeds those
same samples at the reference's fixed batch size (so the batch-size knob and the pipeline's
options do not change what is compared) and reports its outputs' deviation:

    rel_l2   ||out - ref|| / ||ref|| over all outputs (the default; a ceiling)
    max_abs  max |out - ref| (a ceiling)
    top1     the share of samples whose highest-scoring column agrees, where the output is one
             2-D batch of scores with more than one column (a floor)

In train mode (with ``accuracy.train``) the child builds the model again from the same seed,
runs N training steps on the samples and reports the final loss; the deviation is that loss's.

The parent's side (:func:`limit`, :func:`excess`) decides feasibility: with the user's tolerance
the limit is that tolerance on the chosen metric; without one, float noise (:data:`NOISE`).
TensorFlow and NumPy are passed in or imported inside the child's functions, never here.
"""

from __future__ import annotations

import math
from typing import Any

from tuner.child.protocol import WorkloadProblem, describe

METRICS = ("rel_l2", "max_abs", "top1")
# Without a user tolerance the guard allows float noise only. Measured on the quickstart CNN
# (2026-12-02, benchmarks/data/accuracy/): fp32 configurations that change only the summation
# order (threads, instances, oneDNN off) stay below 1e-6 rel_l2; bfloat16 math is near 1e-3.
# 1e-4 sits two orders of magnitude from both.
NOISE_REL_L2 = 1e-4
SEED = 1234           # keras.utils.set_random_seed before a builder runs: identical weights
TRAIN_STEPS = 4       # training steps the train-mode guard runs from the seeded start


# -- the parent's side ----------------------------------------------------------------------------

def limit(metric: str, tolerance: float | None) -> tuple[str, float]:
    """The metric judged and its limit: the tolerance on ``metric``, or float noise on rel_l2
    when there is no tolerance (a ceiling, except top1's floor)."""
    if tolerance is None:
        return "rel_l2", NOISE_REL_L2
    if metric == "top1":
        return metric, 1.0 - tolerance
    return metric, tolerance


def excess(deviation: dict[str, Any] | None, metric: str, tolerance: float | None
           ) -> float | None:
    """How far ``deviation`` (a child's ``accuracy`` result) is beyond the limit: <= 0 within
    it, > 0 beyond (Optuna's constraint convention), inf when it could not be measured or was
    not finite; None when the child measured none (a workload without a model)."""
    if deviation is None:
        return None
    judged, bound = limit(metric, tolerance)
    if deviation.get("error"):
        return math.inf
    value = deviation.get(judged)
    if judged == "top1" and value is None:   # not a batch of scores: judged on rel_l2
        judged, value, bound = "rel_l2", deviation.get("rel_l2"), NOISE_REL_L2 if \
            tolerance is None else tolerance
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.inf
    return (bound - value) if judged == "top1" else (value - bound)


def describe_deviation(deviation: dict[str, Any] | None, metric: str) -> str:
    """One short phrase for a progress line or a report: ``rel_l2 0.0017``."""
    if not deviation:
        return "not measured"
    if deviation.get("error"):
        return f"not measured ({deviation['error']})"
    value = deviation.get(metric)
    if value is None and metric == "top1":
        metric, value = "rel_l2", deviation.get("rel_l2")
    return f"{metric} {value:.3g}" if isinstance(value, (int, float)) else f"{metric} {value}"


# -- the child's side -----------------------------------------------------------------------------

def _numpy_leaves(tf: Any, structure: Any) -> list[Any]:
    import numpy as np

    leaves = []
    for leaf in tf.nest.flatten(structure):
        value = leaf.numpy() if hasattr(leaf, "numpy") else np.asarray(leaf)
        if value.dtype == object:          # tf.string: fixed-width bytes keep np.savez safe
            value = value.astype(bytes)
        leaves.append(value)
    return leaves


def collect(tf: Any, batches: Any, samples: int) -> tuple[list[Any], int] | None:
    """The first ``samples`` samples of ``batches`` (an iterator of model inputs) as NumPy
    leaves, and how many there were (fewer when the data has fewer); None when an input has no
    batch dimension or there is no data."""
    import numpy as np

    parts: list[list[Any]] = []
    have = 0
    while have < samples:
        try:
            element = next(batches)
        except StopIteration:   # a dataset shorter than the samples: what it has
            break
        leaves = _numpy_leaves(tf, element)
        if any(leaf.ndim == 0 for leaf in leaves):
            return None
        parts.append(leaves)
        have += int(leaves[0].shape[0])
    if not parts:
        return None
    joined = [np.concatenate([p[i] for p in parts])[:samples] for i in range(len(parts[0]))]
    return joined, min(have, samples)


def outputs(tf: Any, forward: Any, structure: Any, leaves: list[Any], batch: int) -> list[Any]:
    """``forward`` on ``leaves`` (packed as ``structure``) in slices of ``batch``: each output
    leaf as float64, concatenated over the slices."""
    import numpy as np

    count = int(leaves[0].shape[0])
    gathered: list[list[Any]] = []
    for start in range(0, count, batch):
        piece = [tf.constant(leaf[start:start + batch]) for leaf in leaves]
        out = forward(tf.nest.pack_sequence_as(structure, piece))
        flat = [np.asarray(o.numpy() if hasattr(o, "numpy") else o, dtype=np.float64)
                for o in tf.nest.flatten(out)]
        gathered.append(flat)
    return [np.concatenate([g[i] for g in gathered]) if gathered[0][i].ndim
            else np.array([g[i] for g in gathered]) for i in range(len(gathered[0]))]


def deviation(out: list[Any], ref: list[Any]) -> dict[str, Any]:
    """The deviation of ``out`` from ``ref`` (lists of float64 arrays of equal shapes)."""
    import numpy as np

    if len(out) != len(ref) or any(o.shape != r.shape for o, r in zip(out, ref)):
        return {"error": f"outputs {[o.shape for o in out]} differ in shape from the "
                         f"reference's {[r.shape for r in ref]}"}
    o = np.concatenate([x.ravel() for x in out])
    r = np.concatenate([x.ravel() for x in ref])
    if not np.all(np.isfinite(o)):
        return {"rel_l2": None, "max_abs": None, "top1": None, "nonfinite": True}
    diff = o - r
    norm = float(np.linalg.norm(r))
    result: dict[str, Any] = {
        "rel_l2": float(np.linalg.norm(diff) / norm) if norm > 0 else float(np.linalg.norm(diff)),
        "max_abs": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "top1": None,
    }
    if len(out) == 1 and out[0].ndim == 2 and out[0].shape[1] > 1:
        result["top1"] = float(np.mean(np.argmax(out[0], 1) == np.argmax(ref[0], 1)))
    return result


def save(path: str, inputs: list[Any], outs: list[Any], batch: int) -> None:
    import numpy as np

    arrays = {f"input_{i}": a for i, a in enumerate(inputs)}
    arrays.update({f"output_{i}": a for i, a in enumerate(outs)})
    with open(path, "wb") as handle:
        np.savez(handle, batch=np.array(batch), **arrays)


def load(path: str) -> tuple[list[Any], list[Any], int]:
    """The reference's inputs, outputs and batch size."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = [data[f"input_{i}"] for i in range(sum(k.startswith("input_")
                                                             for k in data.files))]
            outs = [data[f"output_{i}"] for i in range(sum(k.startswith("output_")
                                                           for k in data.files))]
            return inputs, outs, int(data["batch"])
    except (OSError, KeyError, ValueError) as exc:
        raise WorkloadProblem(f"accuracy guard: cannot read the reference {path}: "
                              f"{describe(exc)}") from exc


def differs(fresh: str, kept: str) -> str | None:
    """Why the preflight's reference ``fresh`` shows that the workload is not deterministic
    against the ``kept`` one (the same samples, outputs beyond float noise: the builder's
    weights are not the same in every process), or None. The parent runs this (NumPy only)."""
    import numpy as np

    new_in, new_out, _ = load(fresh)
    old_in, old_out, _ = load(kept)
    if len(new_in) != len(old_in) or any(a.shape != b.shape or not np.array_equal(a, b)
                                         for a, b in zip(new_in, old_in)):
        return None    # other samples (a shuffled pipeline): the kept ones stay the reference
    found = deviation([np.asarray(o, dtype=np.float64) for o in new_out],
                      [np.asarray(o, dtype=np.float64) for o in old_out])
    value = found.get("rel_l2")
    if found.get("error") or value is None or value > NOISE_REL_L2:
        what = found.get("error") or (f"rel_l2 {value:.3g}" if value is not None
                                      else "not finite")
        return (f"accuracy guard: the model's outputs differ between two runs at TensorFlow's "
                f"defaults ({what}, float noise is <= {NOISE_REL_L2:g}), so no deviation could "
                f"be trusted; make the model builder deterministic (no unseeded NumPy or Python "
                f"randomness, no weights from elsewhere) or delete {kept} if the model changed")
    return None


def refused_baseline(deviation: dict[str, Any] | None) -> str | None:
    """Why a baseline trial (TensorFlow's defaults again, in another process) shows the
    workload is not deterministic: its deviation beyond float noise; or None."""
    over = excess(deviation, "rel_l2", None)
    if over is None or over <= 0:
        return None
    return (f"accuracy guard: the model's outputs differ between two runs at TensorFlow's "
            f"defaults ({describe_deviation(deviation, 'rel_l2')}, float noise is <= "
            f"{NOISE_REL_L2:g}), so no deviation could be trusted; make the model builder "
            f"deterministic (tuner seeds keras.utils.set_random_seed before it runs; no unseeded "
            f"NumPy or Python randomness, no weights that change between runs)")
