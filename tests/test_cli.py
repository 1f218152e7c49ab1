"""The command line as a whole."""

from __future__ import annotations

import subprocess
import sys

from helpers import HERE


def test_importing_tuner_stays_light():
    code = ("import sys; import tuner, tuner.cli, tuner.compare, tuner.report, tuner.render, "
            "tuner.results; "
            "heavy = [m for m in ('tensorflow', 'optuna', 'plotly') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=HERE.parent)
