"""The Keras a model file may be loaded with: the first release with every published fix of a
``safe_mode`` bypass, checked in the parent from the installed distributions' metadata (no
TensorFlow import) before any child loads a model file. Config builder modules are the user's
own code and are not affected.

Why this version (SECURITY.md has the list): ``safe_mode`` bypasses were published and fixed
release after release: CVE-2025-1550 (3.9), CVE-2025-8747 and CVE-2025-9906 (3.11.0),
CVE-2025-9905 (legacy HDF5, 3.11.3), CVE-2025-12058 (StringLookup file read, 3.12.0),
CVE-2026-1669 (HDF5 external datasets, 3.13.2), CVE-2026-1462 (TFSMLayer, 3.14.0), and a
later series (Lambda.from_config failing open, archive members) fixed in 3.15.1. "Known-fixed"
is all it means: later reports exist, so a model file is still loaded only from sources you
would run.
"""

from __future__ import annotations

import os
import re
from importlib import metadata

from tuner.errors import ConfigError

MIN_KERAS = (3, 15, 1)
MIN_KERAS_TEXT = ".".join(map(str, MIN_KERAS))
# TensorFlow 2.16+ uses Keras 3 (the "keras" distribution) unless this asks for Keras 2, which
# then comes from "tf-keras"; TensorFlow 2.13-2.15 bundle Keras 2 as "keras" itself
LEGACY_SWITCH = "TF_USE_LEGACY_KERAS"


def _release(version: str) -> tuple[int, ...]:
    """The leading release numbers of a version string ("3.15.1rc0" -> (3, 15, 1))."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break
    return tuple(parts)


def installed() -> tuple[str, str | None]:
    """(which distribution TensorFlow's Keras comes from, its version or None)."""
    legacy = os.environ.get(LEGACY_SWITCH, "").strip().lower() in ("1", "true", "yes")
    name = "tf-keras" if legacy else "keras"
    try:
        return name, metadata.version(name)
    except metadata.PackageNotFoundError:
        return name, None


def check(flag: str) -> None:
    """Refuse to load a model file (``flag``: what named it) with a Keras older than
    :data:`MIN_KERAS`: one line naming the version found."""
    name, version = installed()
    wanted = (f"model files are loaded only with Keras >= {MIN_KERAS_TEXT} (the first release "
              f"with every published safe_mode fix; SECURITY.md)")
    if version is None:
        raise ConfigError(f"{flag}: {wanted}, and no {name} is installed; pip install "
                          f"'keras>={MIN_KERAS_TEXT}'")
    if name == "tf-keras" or _release(version) < MIN_KERAS:
        which = (f"{LEGACY_SWITCH} selects Keras 2 (tf-keras {version})" if name == "tf-keras"
                 else f"this is Keras {version}")
        raise ConfigError(f"{flag}: {wanted}; {which}. Upgrade (pip install "
                          f"'keras>={MIN_KERAS_TEXT}', with TensorFlow >= 2.16), or measure the "
                          f"model through a config whose builder you wrote")
