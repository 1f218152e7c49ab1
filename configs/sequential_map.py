"""A training job whose input pipeline was written sequentially: the expensive per-image map runs
with ``num_parallel_calls=1`` and a one-batch prefetch, as much tutorial code does.

The map (JPEG decode, random crop, bicubic resize, flip, colour jitter, standardisation) costs
far more than a training step of the small model, so the map's parallelism decides throughput.
No thread-pool or ``tf.data.Options`` setting can change a map that asks for one call at a time
(``num_parallel_calls=1`` is not rewritten by ``map_parallelization``, which only touches maps
without ``num_parallel_calls``): only the pipeline's own argument can. So ``build_data`` takes the
map's parallelism and the prefetch depth as keyword arguments, and ``sequential_map.yaml``
declares them as knobs. Their defaults (1 and 1) are the pipeline as written: the baseline.

In production the same function takes the tuned values::

    cfg = tuner.apply("results/sequential_map/tuned.yaml")
    ds = build_data(**cfg.knobs).with_options(cfg.dataset_options())
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

POOL_SIZE = 32
SOURCE_SHAPE = (256, 256, 3)
CROP_SIZE = 192
OUTPUT_SIZE = 96
NUM_CLASSES = 10
BATCH_SIZE = 32
NUM_ELEMENTS = 64 * BATCH_SIZE   # tuner repeats the dataset; enough for varied augmentation seeds
SEED = 0


def _jpeg_pool() -> tf.Tensor:
    """Smooth synthetic images (gradients + noise) encoded as JPEG, standing in for files."""
    rng = np.random.default_rng(SEED)
    h, w, _ = SOURCE_SHAPE
    yy, xx = np.mgrid[0:h, 0:w].astype("float32")
    images = []
    for _ in range(POOL_SIZE):
        fx, fy, phase = rng.uniform(0.01, 0.08), rng.uniform(0.01, 0.08), rng.uniform(0, 6.3)
        base = np.stack([np.sin(fx * xx + phase), np.cos(fy * yy + phase),
                         np.sin(fx * xx + fy * yy)], axis=-1)
        noise = rng.normal(0.0, 0.15, size=SOURCE_SHAPE)
        img = np.clip((base + noise + 1.0) * 127.5, 0, 255).astype("uint8")
        images.append(tf.io.encode_jpeg(img, quality=90))
    return tf.stack(images)


def build_data(map_parallelism: int = 1, prefetch: int = 1) -> tf.data.Dataset:
    """(image, label) training batches, decoded and augmented on the fly.

    ``map_parallelism`` is the map's ``num_parallel_calls`` and ``prefetch`` the prefetch buffer
    in batches; either may be ``tf.data.AUTOTUNE``."""
    pool = _jpeg_pool()
    labels = tf.constant(np.arange(POOL_SIZE) % NUM_CLASSES, dtype=tf.int32)

    def load_and_augment(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # stateless ops seeded by the index: the same stream whatever the parallelism
        seed = tf.stack([tf.cast(index, tf.int32), tf.constant(SEED, tf.int32)])
        seeds = tf.random.experimental.stateless_split(seed, num=4)
        slot = tf.cast(index % POOL_SIZE, tf.int32)
        image = tf.io.decode_jpeg(pool[slot], channels=3)
        image = tf.image.stateless_random_crop(image, (CROP_SIZE, CROP_SIZE, 3), seed=seeds[0])
        image = tf.image.resize(image, (OUTPUT_SIZE, OUTPUT_SIZE), method="bicubic",
                                antialias=True)
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        image = tf.image.stateless_random_brightness(image, 32.0, seed=seeds[2])
        image = tf.image.stateless_random_saturation(image, 0.7, 1.3, seed=seeds[3])
        image = tf.image.per_image_standardization(image)
        return image, labels[slot]

    return (
        tf.data.Dataset.range(NUM_ELEMENTS)
        .map(load_and_augment, num_parallel_calls=map_parallelism, deterministic=True)
        .batch(BATCH_SIZE, drop_remainder=True)
        .prefetch(prefetch)
    )


def build_model() -> keras.Model:
    """A deliberately cheap compiled classifier: the input pipeline is the bottleneck."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(shape=(OUTPUT_SIZE, OUTPUT_SIZE, 3))
    x = keras.layers.Conv2D(16, 3, strides=4, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    model = keras.Model(inputs, outputs, name="sequential_map_classifier")
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model
