"""A tiny real workload whose pipeline takes declared knobs as keyword arguments.

Each builder appends the keyword arguments it received, as JSON, to the file named by
KNOB_RECORD (when set), so a test can see what reached it."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf


def _record(builder: str, **kwargs) -> None:
    path = os.environ.get("KNOB_RECORD")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"builder": builder, **kwargs}) + "\n")


def build_data(map_parallelism=1, prefetch=None):
    _record("data", map_parallelism=map_parallelism, prefetch=prefetch)
    x = tf.random.stateless_normal((128, 16, 16, 3), seed=(1, 2))
    ds = tf.data.Dataset.from_tensor_slices(x).map(lambda v: v * 2.0,
                                                   num_parallel_calls=map_parallelism)
    ds = ds.batch(16)
    return ds.prefetch(prefetch) if prefetch is not None else ds


def build_model(**kwargs):
    _record("model", **kwargs)
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.layers.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(4)])


def build_data_fixed():
    """A builder that takes no knobs."""
    return build_data()


def build_data_needs(cycle_length):
    """A required argument: fine when declared as a knob, an error when not."""
    return build_data()


def build_model_plain():
    """A model builder that takes no knobs."""
    return build_model()
