"""A tiny real Keras workload for end-to-end tests: fast to build, real TensorFlow all the way."""

from __future__ import annotations

import keras
import tensorflow as tf


def build_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.layers.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4),
    ])


def build_trainable():
    model = build_model()
    model.compile(optimizer="sgd", loss="mse")
    return model


def build_data():
    x = tf.random.stateless_normal((128, 16, 16, 3), seed=(1, 2))
    return tf.data.Dataset.from_tensor_slices(x).batch(16)


def build_train_data():
    x = tf.random.stateless_normal((128, 16, 16, 3), seed=(1, 2))
    y = tf.random.stateless_normal((128, 4), seed=(3, 4))
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
