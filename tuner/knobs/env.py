"""Environment variables read when TensorFlow starts: oneDNN, XLA auto-clustering, fpmath."""

from __future__ import annotations

from typing import Any

from tuner.base.host import Machine
from tuner.knobs.base import Knob, _int


class EnvKnob(Knob):
    """An environment variable, set before the process starts (TensorFlow reads it when it
    loads); in the tuned file under ``env:`` when set."""

    how = "environment variable"

    def __init__(self, name: str, *, variable: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.variable = variable
        self.controls = (variable,)

    def check(self, value: Any, where: str) -> Any:
        if _int(value):  # YAML reads OMP_NUM_THREADS: 4 as a number; the environment is text
            value = str(value)
        return super().check(value, where)

    def applied_by(self) -> str:
        return f"{self.how} `{self.variable}`"

    @property
    def file_allowed(self) -> str:
        # the file's env: holds only variables that are set: neither null nor 'default'
        return self.allowed.split(", null or 'default'")[0]

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        value = flat.get(self.name, self.default)
        env = tree.setdefault("env", {})
        if value is not None:
            env[self.variable] = value

    def read(self, tree: dict[str, Any]) -> Any:
        return (tree.get("env") or {}).get(self.variable, self.default)

    def environment(self, value: Any) -> dict[str, str]:
        return {} if value is None else {self.variable: str(value)}


# XLA auto-clustering by its level: the only values TF_XLA_FLAGS may take in a tuned file. The
# variable is free text to TensorFlow (any of its flags, read once per process), so a file is
# held to these. On CPU nothing is clustered without --tf_xla_cpu_global_jit.
XLA_LEVELS = {"1": "--tf_xla_auto_jit=1 --tf_xla_cpu_global_jit",
              "2": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"}
XLA_VALUES = tuple(XLA_LEVELS.values())


class XlaKnob(EnvKnob):
    """XLA auto-clustering (``TF_XLA_FLAGS``): TensorFlow compiles clusters of ops with XLA on
    their first executions. Only :data:`XLA_VALUES` are accepted. The knob also knows what goes
    with it: TF Serving refuses every XLA compilation unless started with
    ``--xla_cpu_compilation_enabled=true``, the first steps pay the compilation, and
    ``jit_compile=True`` on the job's own ``tf.function`` is the in-code form no file carries."""

    # TensorFlow Serving's switch for XLA on CPU (tensorflow_serving/model_servers/main.cc)
    SERVING_FLAG = "--xla_cpu_compilation_enabled=true"
    # TensorFlow's persistent XLA compile cache (a TF_XLA_FLAGS flag of its own)
    CACHE_FLAG = "--tf_xla_persistent_cache_directory"

    def on(self, value: Any) -> bool:
        """Whether ``value`` turns XLA compilation on."""
        return value in XLA_VALUES

    def level(self, value: Any) -> str | None:
        return next((lvl for lvl, flags in XLA_LEVELS.items() if flags == value), None)

    def shown(self, value: Any) -> str:
        return "-" if value is None else f"auto_jit={self.level(value) or '?'}"

    def serving_flags(self, value: Any) -> list[str]:
        """What ``tensorflow_model_server`` needs for ``value``."""
        return [self.SERVING_FLAG] if self.on(value) else []

    def jit_advice(self) -> str:
        """Where XLA helped: the in-code form, which no file can carry."""
        return ("XLA helped this model: in your own code, @tf.function(jit_compile=True) on the "
                "step function compiles it whole, which auto-clustering may not (a file cannot "
                "carry that; measure it)")

    def cache_advice(self, value: Any) -> str:
        """How a job keeps compiled clusters across processes (a flag a file cannot hold)."""
        return (f"to skip most of the compilation in later processes, give TensorFlow a "
                f"persistent cache: set TF_XLA_FLAGS='{value or XLA_VALUES[-1]} "
                f"{self.CACHE_FLAG}=DIR' in the job's environment (it then wins over the file's "
                f"value; a tuned file holds only the values tuner searched)")

    def note(self, tree: Any) -> str | None:
        env = tree.get("env") if isinstance(tree, dict) else None
        value = env.get(self.variable) if isinstance(env, dict) else None
        if not self.on(value):
            return None
        return (f"XLA auto-clustering {self.shown(value)}: the first steps of each process "
                f"compile (see first_steps); TF Serving needs {self.SERVING_FLAG}")


# CPU instructions that make oneDNN's reduced-precision math real (without them oneDNN emulates
# or ignores it): bfloat16 on AVX512-BF16 / AMX-BF16, float16 on AVX512-FP16 / AMX-FP16
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
F16_FLAGS = ("avx512_fp16", "amx_fp16")
FPMATH_MODES = {"BF16": BF16_FLAGS, "F16": F16_FLAGS}


class FpmathKnob(EnvKnob):
    """oneDNN's fp32 math mode (``ONEDNN_DEFAULT_FPMATH_MODE``): f32 matmuls and convolutions
    computed in bfloat16 or float16, results kept in f32. TensorFlow reads its own
    ``TF_SET_ONEDNN_FPMATH_MODE`` too; both are tuner's own (cleared in every reference run), only
    oneDNN's is set. Each mode is offered only on a CPU with its instructions."""

    how = "environment variable"

    def __init__(self, name: str, *, variable: str, also: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(name, variable=variable, **kwargs)
        self.controls = (variable, *also)

    def flags_for(self, value: Any) -> tuple[str, ...]:
        return FPMATH_MODES.get(value, ()) if value != self.default else ()

    def candidates(self, machine: Machine) -> list[Any]:
        return [self.default, *[mode for mode, flags in FPMATH_MODES.items()
                                if set(flags) & machine.cpu_flags]]
