"""Branchy workload: many small, independent branches (Inception-style).

Each branch is a chain of small ops that individually are too cheap to split
across cores efficiently, but the branches do not depend on each other. The
TF executor can only run them concurrently if it has inter-op threads, so this
is the example where inter_op_parallelism_threads changes throughput.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

INPUT_SHAPE = (16, 16, 32)
NUM_BRANCHES = 16
BRANCH_FILTERS = 16
NUM_CLASSES = 10
BATCH_SIZE = 16
NUM_SAMPLES = 8 * BATCH_SIZE
SEED = 0


def _branch(x: keras.KerasTensor, index: int) -> keras.KerasTensor:
    # Vary kernel sizes per branch like an Inception block, so branches have
    # different costs and a static split of the work would not balance.
    kernel = (1, 3, 5)[index % 3]
    x = keras.layers.Conv2D(BRANCH_FILTERS, 1, activation="relu")(x)
    x = keras.layers.Conv2D(BRANCH_FILTERS, kernel, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(BRANCH_FILTERS, 3, padding="same", activation="relu")(x)
    return keras.layers.GlobalAveragePooling2D()(x)


def build_model() -> keras.Model:
    """Return a model with NUM_BRANCHES parallel conv branches concatenated."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(shape=INPUT_SHAPE)
    branches = [_branch(inputs, i) for i in range(NUM_BRANCHES)]
    x = keras.layers.Concatenate()(branches)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    return keras.Model(inputs, outputs, name="branchy")


def build_data() -> tf.data.Dataset:
    """Return batches of synthetic feature maps, materialised once in memory."""
    rng = np.random.default_rng(SEED)
    features = rng.standard_normal((NUM_SAMPLES, *INPUT_SHAPE), dtype=np.float32)
    return tf.data.Dataset.from_tensor_slices(features).batch(BATCH_SIZE, drop_remainder=True)
