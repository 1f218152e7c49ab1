"""The trial child: a fresh process per measurement, started as ``python -m tuner.child.worker``.

``protocol`` (the task and result shapes, shared with the parent), ``worker`` (the entry point),
``workload`` (the user's builders as a step and a dataset), ``model`` (a model file loaded in the
child), ``meter`` (the measuring loop), ``guard`` (the accuracy guard's samples and deviations)
and ``probes`` (what only ``diagnose`` measures). This ``__init__`` imports nothing: the child
pays only for the modules it uses."""
