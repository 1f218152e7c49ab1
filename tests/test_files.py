"""tuner/files.py: the one writability check behind ``--output`` and ``--html``, message by
message, and the atomic write."""

from __future__ import annotations

import os

import pytest

from tuner import files
from tuner.errors import ConfigError

CASES = [  # (flag, what, make_folders, target under tmp, the message after "FLAG: TARGET: ")
    ("--output", "the tuned YAML", True, "sub",
     "is a directory; expected a file name for the tuned YAML"),
    ("--html", "the report", False, "sub",
     "is a directory; expected a file name for the report"),
    ("--html", "the report", False, "missing/r.html",
     "no such directory '{tmp}/missing'; create it first"),
    ("--output", "the tuned YAML", True, "file.txt/deeper/t.yaml",
     "'{tmp}/file.txt' is not a directory"),
    ("--html", "the report", False, "file.txt/r.html", "'{tmp}/file.txt' is not a directory"),
    ("--output", "the tuned YAML", True, "dangling/t.yaml",
     "'{tmp}/dangling' is a broken symbolic link"),
]


@pytest.mark.parametrize("flag,what,make_folders,target,message", CASES)
def test_check_writable_names_the_flag_the_path_and_why(tmp_path, flag, what, make_folders,
                                                        target, message):
    (tmp_path / "sub").mkdir()
    (tmp_path / "file.txt").write_text("x\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    before = sorted(os.listdir(tmp_path))
    path = tmp_path / target
    with pytest.raises(ConfigError) as err:
        files.check_writable(path, flag, what, make_folders=make_folders)
    assert str(err.value) == f"{flag}: {path}: " + message.format(tmp=tmp_path)
    assert sorted(os.listdir(tmp_path)) == before  # nothing created


def test_check_writable_refuses_a_folder_without_write_permission(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    real_access = os.access   # root writes anywhere: the folder answers as it would to a user
    monkeypatch.setattr(files.os, "access",
                        lambda p, mode: real_access(p, mode) and str(p) != str(locked))
    for flag, what in (("--output", "the tuned YAML"), ("--html", "the report")):
        with pytest.raises(ConfigError) as err:
            files.check_writable(locked / "x", flag, what, make_folders=flag == "--output")
        assert str(err.value) == (f"{flag}: {locked / 'x'}: cannot write in {str(locked)!r}: "
                                  f"permission denied")


def test_check_writable_accepts_missing_folders_only_when_the_write_makes_them(tmp_path):
    files.check_writable(tmp_path / "a" / "b" / "t.yaml", "--output", "the tuned YAML",
                         make_folders=True)
    files.check_writable(tmp_path / "r.html", "--html", "the report", make_folders=False)
    with pytest.raises(ConfigError):
        files.check_writable(tmp_path / "a" / "r.html", "--html", "the report",
                             make_folders=False)
    assert not (tmp_path / "a").exists()


def test_write_text_atomic_makes_folders_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a" / "t.yaml"
    files.write_text_atomic(target, "one\n")
    files.write_text_atomic(target, "two\n", durable=False)
    assert target.read_text() == "two\n"
    assert os.listdir(target.parent) == ["t.yaml"]
