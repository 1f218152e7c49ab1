"""The bounded YAML loader every reader goes through (tuner/base/yamlsafe.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import yaml

from tuner import config
from tuner.base import yamlsafe
from tuner.config import modelflags as modelfile
from tuner.errors import ConfigError
from tuner.tuned import store as tuned


def laughs(levels: int) -> str:
    """A "billion laughs" document: each level holds nine aliases of the one before."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "a 5,000-digit integer": "format_version: " + "9" * 5000,
    "a huge hexadecimal integer": "format_version: 0x" + "f" * 5000,
    "3,000 nested [": "format_version: " + "[" * 3000 + "]" * 3000,
    "a self-referencing alias": "format_version: 1\nsettings: &s {loop: *s}\n",
    "a self-referencing list": "a: &a [*a]\n",
    "eight levels of aliases": laughs(8),
    "a duplicate key": "verdict: tuned\nverdict: defaults\n",
    "an unhashable key": "{[1]: 2}\n",
    "a python tag": "a: !!python/object/apply:os.system [true]\n",
    "bad base64": "a: !!binary 'AAA'\n",
    "a NUL byte": "a: '\x00'\n",
    "an unclosed flow": "a: [1, 2\n",
}


@pytest.mark.parametrize("aliases", [False, True])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_every_hostile_document_is_one_short_line(name, aliases):
    with pytest.raises(ConfigError) as caught:
        yamlsafe.parse(HOSTILE[name], "f.yaml", "tuned", aliases=aliases)
    text = str(caught.value)
    assert text.startswith("f.yaml: not a readable tuned file: ") and "\n" not in text
    assert len(text) <= 220, text
    assert text.isprintable(), text


def test_dates_are_text_in_result_files_and_impossible_ones_an_error_in_configs():
    text = "created: 2026-13-45\nwhen: 2026-11-26T07:08:21+00:00\n"
    assert yamlsafe.parse(text, "t.yaml", "tuned", aliases=False) == {
        "created": "2026-13-45", "when": "2026-11-26T07:08:21+00:00"}
    with pytest.raises(ConfigError, match="a value cannot be read"):
        yamlsafe.parse(text, "c.yaml", "config", aliases=True)


@pytest.mark.parametrize("tag", ["!!binary 'AAAA'", "!!set {a, b}", "!!omap [{a: 1}]",
                                 "!!pairs [{a: 1}]"])
def test_result_files_hold_json_data_only(tag):
    with pytest.raises(ConfigError, match="is not allowed in this file"):
        yamlsafe.parse(f"x: {tag}\n", "t.yaml", "tuned", aliases=False)


def test_anchors_are_refused_in_result_files_and_capped_in_configs():
    legit = "base: &b {a: 1, b: 2}\nuse: {<<: *b, c: 3}\nagain: *b\n"
    assert yamlsafe.parse(legit, "c.yaml", "config", aliases=True)["use"] == \
        {"a": 1, "b": 2, "c": 3}
    with pytest.raises(ConfigError, match="anchors and aliases"):
        yamlsafe.parse(legit, "t.yaml", "tuned", aliases=False)
    # five levels expand to 9^5 = 59,049 values: under the cap; six (531,441) are not
    assert len(yamlsafe.parse(laughs(4), "c.yaml", "config", aliases=True)) == 5
    with pytest.raises(ConfigError, match=f"more than {yamlsafe.MAX_NODES} values"):
        yamlsafe.parse(laughs(6), "c.yaml", "config", aliases=True)


def test_the_nesting_cap_is_exact():
    depth = yamlsafe.MAX_DEPTH - 1  # the document's mapping is one level
    yamlsafe.parse("a: " + "[" * depth + "]" * depth, "f", "tuned", aliases=False)
    with pytest.raises(ConfigError, match="nested more than"):
        yamlsafe.parse("a: " + "[" * (depth + 1) + "]" * (depth + 1), "f", "tuned", aliases=False)


def test_integers_up_to_the_cap_read_and_longer_ones_do_not():
    n = "9" * yamlsafe.MAX_INT_DIGITS
    assert yamlsafe.parse(f"a: {n}", "f", "tuned", aliases=False) == {"a": int(n)}
    with pytest.raises(ConfigError, match="integer of"):
        yamlsafe.parse(f"a: {n}9", "f", "tuned", aliases=False)


def _in_thread(fn, timeout: float = 5.0):
    """``fn()``'s outcome, or a failure if it blocks longer than ``timeout``."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked"
    return out


def test_a_fifo_or_a_device_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "tuned.yaml"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        out = _in_thread(lambda p=path: yamlsafe.load(p, "tuned"))
        assert isinstance(out.get("error"), ConfigError), out
        assert "not a regular file" in str(out["error"])
    from tuner.tuned import sizes

    assert _in_thread(lambda: sizes.is_sizes_file(fifo)) == {"value": False}
    # writing a tuned file over a FIFO reads it first (whose study is it?): no hang either
    out = _in_thread(lambda: tuned.verdict_of(fifo))
    assert out == {"value": None}


def test_size_cap_a_directory_and_text_that_is_not_utf8(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" + "#" * yamlsafe.MAX_BYTES)
    with pytest.raises(ConfigError, match="at most"):
        yamlsafe.load(big, "tuned")
    with pytest.raises(ConfigError, match="is a directory"):
        yamlsafe.load(tmp_path, "tuned")
    (tmp_path / "latin.yaml").write_bytes(b"a: \xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        yamlsafe.load(tmp_path / "latin.yaml", "sizes")


def test_shown_is_bounded_escaped_and_never_raises():
    huge = int("f" * 5000, 16)   # str() of it raises ValueError (more than 4,300 digits)
    assert yamlsafe.shown(huge) == "<int>"
    text = yamlsafe.shown("\x1b]0;owned\x07" * 1000)
    assert len(text) < 120 and "\x1b" not in text and "\\x1b" in text
    nested: list = []
    nested.append(nested)
    assert len(yamlsafe.shown(nested)) < 40
    assert len(yamlsafe.shown([list(range(1000))] * 1000)) < 200


def test_tuner_writes_no_anchors_even_when_an_object_appears_twice(tmp_path):
    shared = {"a": [1, 2]}
    text = yamlsafe.dump({"x": shared, "y": shared})
    assert "&" not in text and "*" not in text
    assert yamlsafe.parse(text, "f", "tuned", aliases=False) == {"x": shared, "y": shared}
    # the generated config of a model-file search: the same list twice stays plain
    doc = {"workload": {"model": "m.keras", "input_shapes": {"a": "1x2"}},
           "space": {"batch_size": [1, 8]}, "search": {"batch_sizes": None}}
    doc["search"]["batch_sizes"] = doc["space"]["batch_size"]
    rendered = modelfile.render(doc, Path("results/m/config.yaml"))
    assert "&" not in rendered and "*id" not in rendered
    assert yaml.safe_load(rendered)["search"]["batch_sizes"] == [1, 8]


def test_a_config_reads_through_the_bounded_loader(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("workload: &w\n  model: a.py:m\nsearch: *w\n" + laughs(6))
    with pytest.raises(ConfigError, match="more than"):
        config.load(path)
    os.unlink(path)
    os.mkfifo(path)
    out = _in_thread(lambda: config.load(path))
    assert isinstance(out.get("error"), ConfigError) and "not a regular file" in \
        str(out["error"])
