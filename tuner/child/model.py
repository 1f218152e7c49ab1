"""A model file in the trial child: load it, read its input signature, generate its inputs.

A ``.keras`` / ``.h5`` file is loaded with Keras (compiled only for mode ``train``); a SavedModel
directory with ``tf.saved_model.load`` and called through one of its signatures (Keras or a plain
``tf.Module``). Every input of the signature (one tensor, a list, a dict of named inputs; float,
int, bool and string dtypes) gets synthetic data of its dtype and shape: the batch dimension is
the trial's batch size, an unknown other dimension comes from ``input_shapes`` (or the input is
refused with its name and known shape). The data is generated once, and a real job's pipeline
feeds it: ``from_tensor_slices -> repeat -> batch -> prefetch``.

Every problem is a :class:`~tuner.child.protocol.WorkloadProblem`: one line, shown to the user as
the preflight's cause. TensorFlow is passed in; this module imports it nowhere itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from tuner.child.protocol import WorkloadProblem, describe

# batches of generated data in the pool the pipeline cycles through
POOL_BATCHES = 2
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "tuner")


@dataclass(frozen=True)
class Input:
    """One input of the signature: its name, known shape (None: unknown; None as a whole: unknown
    rank) and dtype (a ``tf.DType``)."""

    name: str
    shape: tuple[int | None, ...] | None
    dtype: Any

    def describe(self) -> str:
        dims = "unknown rank" if self.shape is None else \
            "(" + ", ".join("None" if d is None else str(d) for d in self.shape) + ")"
        return f"{self.name} {dims} {self.dtype.name}"


class Loaded:
    """A loaded model file: its inputs, their structure, and how to call it."""

    def __init__(self, tf: Any, wl: dict[str, Any]) -> None:
        self.tf = tf
        self.path = wl["model"]
        self.format = wl["model_format"]
        self.mode = wl["mode"]
        self.keras_model: Any = None
        self.signature_fn: Any = None
        if self.format == "keras":
            self._load_keras()
        else:
            self._load_saved_model(wl.get("signature") or "serving_default")

    # -- loading ----------------------------------------------------------------------------------

    def _load_keras(self) -> None:
        import keras

        why = _not_keras_file(self.path)
        if why:
            raise WorkloadProblem(f"{self.path}: not a Keras model file: {why}")
        lambdas = _h5_lambda_layers(self.path)
        if lambdas:
            raise WorkloadProblem(
                f"{self.path}: refused: Lambda layer(s) {', '.join(map(repr, lambdas))} in a "
                f"legacy .h5 file carry Python code that would run when it is loaded; save the "
                f"model as .keras (Keras refuses code there by default), or measure it through a "
                f"config whose builder you wrote")
        try:
            # safe_mode: Keras refuses a Lambda's serialized code instead of running it
            model = keras.saving.load_model(self.path, compile=self.mode == "train",
                                            safe_mode=True)
        except BaseException as exc:
            raise WorkloadProblem(f"{self.path}: cannot load it as a Keras model: "
                                  f"{describe(exc)}") from exc
        if not isinstance(model, keras.Model):
            raise WorkloadProblem(f"{self.path}: holds a {type(model).__name__}, not a Keras model")
        if self.mode == "train" and getattr(model, "optimizer", None) is None:
            raise WorkloadProblem(f"{self.path}: mode train needs a compiled model (saved after "
                                  f"model.compile(...)); this one has no optimizer")
        self.keras_model = model
        try:
            structure = model.input
        except (AttributeError, ValueError) as exc:
            raise WorkloadProblem(f"{self.path}: the model has no input signature (a subclassed "
                                  f"model never called?): {describe(exc)}; save a functional "
                                  f"model, or use --data with your pipeline") from exc
        if isinstance(structure, dict):
            self.inputs = [self._keras_input(t, str(name)) for name, t in structure.items()]
            self.structure = "dict"
        elif isinstance(structure, (list, tuple)):
            self.inputs = [self._keras_input(t, None) for t in structure]
            self.structure = "list"
        else:
            self.inputs = [self._keras_input(structure, None)]
            self.structure = "single"

    def _keras_input(self, tensor: Any, name: str | None) -> Input:
        shape = getattr(tensor, "shape", None)
        return Input(name=name or str(getattr(tensor, "name", "input")),
                     shape=None if shape is None else tuple(shape),
                     dtype=self.tf.as_dtype(getattr(tensor, "dtype", "float32")))

    def _load_saved_model(self, signature: str) -> None:
        tf = self.tf
        try:
            loaded = tf.saved_model.load(self.path)
        except BaseException as exc:
            raise WorkloadProblem(f"{self.path}: cannot load it as a SavedModel: "
                                  f"{describe(exc)}") from exc
        names = sorted(getattr(loaded, "signatures", {}) or {})
        if signature not in names:
            available = ", ".join(names) if names else "none (save it with signatures=...)"
            raise WorkloadProblem(f"{self.path}: no signature {signature!r}; available: "
                                  f"{available}")
        fn = loaded.signatures[signature]
        self.loaded = loaded  # the functions need their object alive
        self.signature_fn = fn
        _, kwargs = fn.structured_input_signature
        self.inputs = [Input(name=str(name), dtype=spec.dtype,
                             shape=None if spec.shape.rank is None else tuple(spec.shape.as_list()))
                       for name, spec in sorted(kwargs.items())]
        self.structure = "dict"
        if not self.inputs:
            raise WorkloadProblem(f"{self.path}: signature {signature!r} takes no inputs; "
                                  f"nothing to feed")

    # -- generated inputs -------------------------------------------------------------------------

    def shapes(self, batch: int, given: dict[str, list[int]]) -> dict[str, list[int]]:
        """Each input's full shape for batches of ``batch``, unknown dimensions from ``given``."""
        names = [i.name for i in self.inputs]
        unknown = [n for n in given if n not in names]
        if unknown:
            raise WorkloadProblem(f"input_shapes: {self.path} has no input {unknown[0]!r}; its "
                                  f"inputs: {', '.join(i.describe() for i in self.inputs)}")
        return {i.name: _shape(i, batch, given.get(i.name)) for i in self.inputs}

    def dataset(self, batch: int, given: dict[str, list[int]]) -> Any:
        """Generated inputs (for train: with the model's own predictions as targets), built once,
        fed as a real job's pipeline feeds a model."""
        tf = self.tf
        shapes = self.shapes(batch, given)
        batched = all(len(s) >= 1 for s in shapes.values())
        rows = batch * POOL_BATCHES if batched else None
        tf.random.set_seed(0)
        columns = {i.name: _generate(tf, [rows, *shapes[i.name][1:]] if batched
                                     else shapes[i.name], i.dtype)
                   for i in self.inputs}
        x = self.pack(columns)
        if self.mode == "train":
            x = (x, self.keras_model(x, training=False))
        if batched:
            dataset = tf.data.Dataset.from_tensor_slices(x).repeat().batch(
                batch, drop_remainder=True)
        else:   # a scalar input has no batch dimension to slice along: one batch, repeated
            dataset = tf.data.Dataset.from_tensors(x).repeat()
        return dataset.prefetch(tf.data.AUTOTUNE)

    def pack(self, columns: dict[str, Any]) -> Any:
        """Tensors by input name -> the structure the model takes."""
        if self.structure == "dict":
            return dict(columns)
        values = [columns[i.name] for i in self.inputs]
        return tuple(values) if self.structure == "list" else values[0]

    # -- calling ----------------------------------------------------------------------------------

    def step(self) -> Callable[[Any], Any]:
        """One step on a batch as the dataset yields it."""
        tf = self.tf
        if self.signature_fn is not None:
            fn = self.signature_fn
            only = self.inputs[0].name if len(self.inputs) == 1 else None

            def call(batch: Any) -> Any:
                if not isinstance(batch, dict):
                    if only is None:
                        raise WorkloadProblem(f"the signature takes named inputs "
                                              f"({', '.join(i.name for i in self.inputs)}); the "
                                              f"dataset must yield a dict of them")
                    batch = {only: batch}
                return fn(**batch)

            return call
        model = self.keras_model
        if self.mode == "train":
            train = tf.function(model.train_step, reduce_retracing=True)
            return lambda batch: train(tuple(batch))
        forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        return forward

    def params(self) -> int | None:
        if self.keras_model is not None:
            return int(self.keras_model.count_params())
        # a signature's captured variables (a loaded plain object need not list them)
        variables = getattr(self.signature_fn, "variables", None) or []
        try:
            return int(sum(int(v.shape.num_elements() or 0) for v in variables))
        except Exception:  # an object's variables are its own business
            return None

    def describe_inputs(self) -> list[dict[str, Any]]:
        return [{"name": i.name, "shape": None if i.shape is None else list(i.shape),
                 "dtype": i.dtype.name} for i in self.inputs]


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _not_keras_file(path: str) -> str | None:
    """Why ``path`` cannot be a Keras file, from its first bytes (Keras's own message for a file
    of the wrong kind says "File not found"), or None."""
    import zipfile

    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        return exc.strerror or str(exc)
    if path.lower().endswith(".keras"):
        return None if zipfile.is_zipfile(path) else "not a zip archive (a .keras file is one)"
    return None if head == HDF5_SIGNATURE else "not an HDF5 file (a .h5 file is one)"


def _shape(spec: Input, batch: int, given: list[int] | None) -> list[int]:
    """The full shape of one input's batches."""
    hint = f"give it with --input-shape {spec.name}=" + "x".join(
        str(batch if n == 0 else (d or "N")) for n, d in enumerate(spec.shape or (None, None)))
    if spec.shape is None:
        if given is None:
            raise WorkloadProblem(f"input {spec.name!r} has an unknown shape (unknown rank); "
                                  f"{hint.replace('xN', 'x...')} (workload.input_shapes)")
        return [batch, *given[1:]] if len(given) > 1 else [batch]
    known = list(spec.shape)
    if len(known) == 0:
        return []
    if given is not None:
        if len(given) == len(known) - 1:
            given = [batch, *given]
        if len(given) != len(known):
            raise WorkloadProblem(f"input_shapes.{spec.name}: {'x'.join(map(str, given))} has "
                                  f"{len(given)} dimensions; the model's input is "
                                  f"{spec.describe()}")
        for n, (want, have) in enumerate(zip(known, given)):
            if n > 0 and want is not None and want != have:
                raise WorkloadProblem(f"input_shapes.{spec.name}: dimension {n} is {have}, but "
                                      f"the model's input is {spec.describe()}")
        known = [known[0], *given[1:]]
    missing = [n for n, d in enumerate(known) if d is None and n > 0]
    if missing:
        raise WorkloadProblem(f"input {spec.name!r} has shape {spec.describe().split(' ', 1)[1]} "
                              f"with unknown dimensions; {hint} (workload.input_shapes in a "
                              f"config)")
    if known[0] is not None and known[0] != batch:
        raise WorkloadProblem(f"input {spec.name!r} has a fixed batch dimension of {known[0]} "
                              f"({spec.describe()}); use --batch-size {known[0]}")
    return [batch, *known[1:]]


def _generate(tf: Any, shape: list[Any], dtype: Any) -> Any:
    """Random data of ``shape`` and ``dtype``: floats in [0, 1), integers 0 or 1 (valid ids for
    any embedding or lookup), booleans, words for strings."""
    if dtype.is_floating:
        return tf.cast(tf.random.uniform(shape), dtype)
    if dtype.is_integer:
        return tf.cast(tf.random.uniform(shape, 0, 2, dtype=tf.int32), dtype)
    if dtype == tf.bool:
        return tf.random.uniform(shape) < 0.5
    if dtype == tf.string:
        ids = tf.random.uniform(shape, 0, len(WORDS), dtype=tf.int32)
        return tf.gather(tf.constant(WORDS), ids)
    if dtype.is_complex:
        return tf.complex(tf.random.uniform(shape), tf.random.uniform(shape))
    return tf.zeros(shape, dtype)


def _h5_lambda_layers(path: str) -> list[str]:
    """The names of the Lambda layers a legacy HDF5 model file declares (any depth): their
    functions are marshalled bytecode or references to any module's function, and Keras before
    3.11 ran them on load whatever ``safe_mode`` said."""
    if not str(path).lower().endswith((".h5", ".hdf5")):
        return []
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get("model_config")
    except (OSError, ValueError):
        return []   # not readable as HDF5: Keras's own error says so
    if raw is None:
        return []
    try:
        config = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        return []
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                found.append(str((node.get("config") or {}).get("name", "?")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found
