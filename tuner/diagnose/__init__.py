"""``python -m tuner diagnose`` in the parent: ``run`` starts the probe child and analyses what it
measured into findings; ``text`` prints them. The child's side is :mod:`tuner.child.probes`."""
