"""A tuned file in production: ``apply`` (``tuner.apply()`` and ``prepare()``, the checks made
first) and ``launch`` (``python -m tuner run`` and ``export``). Nothing here imports the search,
Optuna or TensorFlow at import time."""
