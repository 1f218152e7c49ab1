"""Quickstart workload: a small image CNN served in inference (predict) mode.

Deliberately small so a full search (~10 fresh-subprocess trials) finishes in
a few minutes on a laptop-class CPU, yet "real" enough (convs + batchnorm +
pooling + dense head) that intra-op threading visibly changes step time.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

IMAGE_SHAPE = (64, 64, 3)
NUM_CLASSES = 10
BATCH_SIZE = 32
# A handful of distinct batches is enough: the tuner repeats the dataset, and
# keeping the pool small keeps memory and build time negligible.
NUM_SAMPLES = 8 * BATCH_SIZE
SEED = 0


def build_model() -> keras.Model:
    """Return a small VGG-style CNN; weights are seeded so runs are comparable."""
    keras.utils.set_random_seed(SEED)

    def conv_block(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        return keras.layers.MaxPooling2D()(x)

    inputs = keras.Input(shape=IMAGE_SHAPE)
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64, 128):
        x = conv_block(x, filters)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    return keras.Model(inputs, outputs, name="quickstart_cnn")


def build_data() -> tf.data.Dataset:
    """Return batches of synthetic uint8-range images (labels omitted: predict).

    The images are materialised once in memory so the input pipeline is nearly
    free and the measured time is dominated by the model itself.
    """
    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, size=(NUM_SAMPLES, *IMAGE_SHAPE)).astype("float32")
    return tf.data.Dataset.from_tensor_slices(images).batch(BATCH_SIZE, drop_remainder=True)
