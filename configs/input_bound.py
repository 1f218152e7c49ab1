"""Input-bound training workload: expensive JPEG decode + augmentation, tiny model.

The per-element map (JPEG decode, random crop, resize, flip, colour jitter,
standardisation) costs far more than one training step of the small model, so
throughput is decided by how many threads tf.data gets to run the map in
parallel — i.e. by tf.data.Options().threading and num_parallel_calls.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# A small pool of pre-encoded JPEGs stands in for files on disk: decoding is
# the realistic, CPU-heavy part of an image pipeline, and encoding only a
# handful at build time keeps start-up fast and memory tiny.
POOL_SIZE = 32
SOURCE_SHAPE = (256, 256, 3)
CROP_SIZE = 192
OUTPUT_SIZE = 96
NUM_CLASSES = 10
BATCH_SIZE = 32
# Elements per pass; the tuner repeats the dataset, so this only needs to be
# large enough that augmentation seeds vary across batches.
NUM_ELEMENTS = 64 * BATCH_SIZE
SEED = 0


def _make_jpeg_pool() -> tf.Tensor:
    """Encode smooth synthetic images (gradients + noise) as JPEG bytes.

    Pure noise would compress badly and make decode cost atypical; a blurred
    pattern behaves more like a photo.
    """
    rng = np.random.default_rng(SEED)
    h, w, _ = SOURCE_SHAPE
    yy, xx = np.mgrid[0:h, 0:w].astype("float32")
    images = []
    for _ in range(POOL_SIZE):
        fx, fy, phase = rng.uniform(0.01, 0.08), rng.uniform(0.01, 0.08), rng.uniform(0, 6.3)
        base = np.stack(
            [np.sin(fx * xx + phase), np.cos(fy * yy + phase), np.sin(fx * xx + fy * yy)],
            axis=-1,
        )
        noise = rng.normal(0.0, 0.15, size=SOURCE_SHAPE)
        img = np.clip((base + noise + 1.0) * 127.5, 0, 255).astype("uint8")
        images.append(tf.io.encode_jpeg(img, quality=90))
    return tf.stack(images)


def build_data() -> tf.data.Dataset:
    """Return (image, label) training batches decoded and augmented on the fly."""
    pool = _make_jpeg_pool()
    labels = tf.constant(np.arange(POOL_SIZE) % NUM_CLASSES, dtype=tf.int32)

    def load_and_augment(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # Stateless ops seeded by the element index keep the stream
        # deterministic regardless of how many threads run the map.
        seed = tf.stack([tf.cast(index, tf.int32), tf.constant(SEED, tf.int32)])
        seeds = tf.random.experimental.stateless_split(seed, num=4)
        slot = tf.cast(index % POOL_SIZE, tf.int32)

        image = tf.io.decode_jpeg(pool[slot], channels=3)
        image = tf.image.stateless_random_crop(image, (CROP_SIZE, CROP_SIZE, 3), seed=seeds[0])
        image = tf.image.resize(image, (OUTPUT_SIZE, OUTPUT_SIZE), method="bicubic", antialias=True)
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        image = tf.image.stateless_random_brightness(image, 32.0, seed=seeds[2])
        image = tf.image.stateless_random_saturation(image, 0.7, 1.3, seed=seeds[3])
        image = tf.image.per_image_standardization(image)
        return image, labels[slot]

    return (
        tf.data.Dataset.range(NUM_ELEMENTS)
        # AUTOTUNE lets tf.data scale the map to whatever thread pool the
        # tuner's Options grant it — that pool size is what we want to tune.
        .map(load_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(BATCH_SIZE, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def build_model() -> keras.Model:
    """Return a deliberately cheap, compiled classifier (a strided conv + head)."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(shape=(OUTPUT_SIZE, OUTPUT_SIZE, 3))
    x = keras.layers.Conv2D(16, 3, strides=4, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    model = keras.Model(inputs, outputs, name="input_bound_classifier")
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model
