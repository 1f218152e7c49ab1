"""The wheel holds the whole package: built from a copy of the sources (nothing written into the
checkout), unpacked, and every module of tuner/ imported from there, not from the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from helpers import HERE

ROOT = HERE.parent


def test_the_wheel_holds_and_imports_every_subpackage(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "tuner", src / "tuner",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(src)], check=True, cwd=tmp_path,
                   capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("tuner-*.whl")
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)

    expected = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tuner").rglob("*.py"))
    packed = sorted(str(p.relative_to(unpacked)) for p in (unpacked / "tuner").rglob("*.py"))
    assert packed == expected

    modules = [p[:-3].replace("/", ".").removesuffix(".__init__") for p in expected
               if not p.endswith("__main__.py")]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    module = importlib.import_module(name)\n"
            f"    assert module.__file__.startswith({str(unpacked)!r}), module.__file__\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                   env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"})
