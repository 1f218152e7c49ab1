"""The files a search writes and everything else reads: ``store`` (the tuned file's format
versions, atomic writes with history, the raw read), ``reader`` (the one strict reader of a tuned
file, untrusted input -> ``TunedFile``) and ``sizes`` (the sizes file of ``size``: format, writes,
its strict reader, a row as a tuned file)."""
