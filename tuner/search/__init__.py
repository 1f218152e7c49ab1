"""The search, in stages that hand each other plain frozen data.

``pipeline`` drives ``search``: ``measuring`` (preflight, one measurement under the host lock)
-> ``study`` (the Optuna study, through ``trial`` for each child, ``sampling`` and ``structured``
for what to try, ``progress`` for what it says, ``shared`` for several workers on one study,
``storage`` for its database) -> ``outcome`` (the study stage's ``Searched``) -> ``validate``
(the final interleaved rounds) -> ``verdict`` (the tuned document). ``plan`` is ``--dry-run``,
``sizing`` the ``size`` command, ``check`` the ``check`` command."""
