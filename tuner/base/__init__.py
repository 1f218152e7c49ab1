"""Foundations every layer shares, none of them about TensorFlow or a search: output files
(``files``), storage URLs with their secrets masked (``urls``), statistics (``stats``), tables and
escaping for text, markdown, HTML and JSON (``render``), the bounded YAML loader (``yamlsafe``),
the machine's facts and CPU sets (``host``, ``cpusets``), the host-wide measurement lock
(``lock``) and the version (``version``)."""
