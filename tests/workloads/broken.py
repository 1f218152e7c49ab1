"""Workloads that go wrong in each way a user's code can, for the failure-handling tests."""

from __future__ import annotations

import os
import time

from tiny import build_data, build_model  # noqa: F401  (neighbours import like user code does)


def build_raises():
    raise ValueError("no such layer: Conv9D")


def build_aborts():
    os.abort()


def build_hangs():
    time.sleep(3600)


def build_list():
    return [1, 2, 3]


def build_uncompiled():
    return build_model()


def build_scalars():
    import tensorflow as tf

    return tf.data.Dataset.range(10)


def build_unbatched_pairs():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(tf.zeros((8, 16, 16, 3))).batch(4)


def build_model_that_crashes_when_threads_are_1():
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() == 1:
        os.abort()
    return build_model()


def build_model_that_hangs_when_threads_are_1():
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() == 1:
        time.sleep(3600)
    return build_model()


def build_model_that_raises_when_threads_are_1():
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() == 1:
        raise RuntimeError("this workload refuses one thread")
    return build_model()
