"""An input-bound workload for the diagnose tests: a sequential map that calls Python (a sleep
standing in for per-element preprocessing in NumPy or PIL) feeds the tiny model."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
from tiny import build_model  # noqa: F401  (neighbours import like user code does)


def _preprocess(index):
    time.sleep(0.002)  # ~2 ms of Python per element: 32 ms per batch of 16
    return np.full((16, 16, 3), float(index) / 100.0, dtype=np.float32)


def slow_preprocess(index):
    image = tf.py_function(_preprocess, [index], tf.float32)
    image.set_shape((16, 16, 3))
    return image


def build_data():
    return tf.data.Dataset.range(256).map(slow_preprocess).batch(16)
