"""Encoder workload: a small transformer encoder (two blocks of multi-head self-attention and a
feed-forward layer, layer norm, residuals) served in inference (predict) mode.

Why it is interesting: it is many small ops (softmax, layer norm, GELU, reshapes around every
matmul) rather than a few large convolutions, the shape where XLA's fusion of elementwise ops
pays on CPU, and where several pinned instances beat one process's thread pools.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

SEQ_LEN = 64
D_MODEL = 128
HEADS = 4
FF = 512
BLOCKS = 2
BATCH_SIZE = 8
NUM_SAMPLES = 8 * BATCH_SIZE
SEED = 0


def build_model() -> keras.Model:
    """Return the encoder; weights are seeded so every process builds the same model."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(shape=(SEQ_LEN, D_MODEL))
    x = inputs
    for _ in range(BLOCKS):
        attn = keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=D_MODEL // HEADS)(x, x)
        x = keras.layers.LayerNormalization()(x + attn)
        ff = keras.layers.Dense(FF, activation="gelu")(x)
        ff = keras.layers.Dense(D_MODEL)(ff)
        x = keras.layers.LayerNormalization()(x + ff)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs, name="encoder")


def build_data() -> tf.data.Dataset:
    """Return batches of synthetic token embeddings, materialised once in memory."""
    rng = np.random.default_rng(SEED)
    tokens = rng.standard_normal((NUM_SAMPLES, SEQ_LEN, D_MODEL)).astype("float32")
    return tf.data.Dataset.from_tensor_slices(tokens).batch(BATCH_SIZE, drop_remainder=True)
