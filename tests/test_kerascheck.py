"""Model files are loaded only with a Keras that has every published safe_mode fix (#24): older
Keras, Keras 2 (TensorFlow 2.13-2.15, or TF_USE_LEGACY_KERAS) and no Keras at all are one error
line naming the version, in seconds, before any child; builder configs are unaffected."""

from __future__ import annotations

from importlib import metadata

import pytest
from helpers import assert_one_error_line, run_cli

from tuner import config
from tuner.config import kerascheck
from tuner.errors import ConfigError


def _installed(monkeypatch, versions: dict[str, str]) -> None:
    def version(name: str) -> str:
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(kerascheck.metadata, "version", version)


@pytest.mark.parametrize("versions,legacy,needle", [
    ({"keras": "3.14.0"}, "", "this is Keras 3.14.0"),
    ({"keras": "3.13.2"}, "", "this is Keras 3.13.2"),
    ({"keras": "3.12.4"}, "", "this is Keras 3.12.4"),
    ({"keras": "2.15.0"}, "", "this is Keras 2.15.0"),       # TensorFlow 2.15's own
    ({"keras": "2.13.1"}, "", "this is Keras 2.13.1"),
    ({"keras": "3.15.1", "tf-keras": "2.16.0"}, "1", "selects Keras 2 (tf-keras 2.16.0)"),
    ({}, "", "no keras is installed"),
])
def test_older_keras_is_refused_naming_its_version(monkeypatch, versions, legacy, needle):
    _installed(monkeypatch, versions)
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", legacy)
    with pytest.raises(ConfigError) as err:
        kerascheck.check("--model")
    message = str(err.value)
    assert message.startswith("--model: model files are loaded only with Keras >= 3.15.1")
    assert needle in message and "\n" not in message


@pytest.mark.parametrize("version", ["3.15.1", "3.15.2", "3.16.0rc1", "4.0"])
def test_known_fixed_keras_is_accepted(monkeypatch, version):
    _installed(monkeypatch, {"keras": version})
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    kerascheck.check("--model")


@pytest.mark.parametrize("command", ["search", "diagnose", "size"])
def test_model_file_commands_refuse_old_keras_in_seconds(monkeypatch, capsys, tmp_path,
                                                         fake_worker, command):
    import time

    _installed(monkeypatch, {"keras": "3.14.0"})
    (tmp_path / "m.keras").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    started = time.monotonic()
    code, _, err = run_cli(capsys, command, "--model", str(tmp_path / "m.keras"))
    assert time.monotonic() - started < 5
    assert_one_error_line(code, err, "--model", "Keras >= 3.15.1", "this is Keras 3.14.0")
    assert not (tmp_path / "results").exists()


def test_a_config_naming_a_model_file_is_refused_and_a_builder_config_is_not(
        monkeypatch, tmp_path, write_config):
    _installed(monkeypatch, {"keras": "2.15.0"})
    (tmp_path / "m.keras").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    model_cfg = tmp_path / "model.yaml"
    model_cfg.write_text("workload: {model: m.keras}\n")
    with pytest.raises(ConfigError, match=r"model\.yaml: workload\.model: model files are loaded "
                                          r"only with Keras >= 3\.15\.1.*Keras 2\.15\.0"):
        config.load(model_cfg)
    assert config.load(write_config()).workload.model.endswith("wl.py:build_model")
