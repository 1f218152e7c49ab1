"""Reading results back: ``model`` (the one results model, ``Result``, from tuned files and
studies), ``compare`` (``show`` and ``compare``) and ``report`` (``report``, text and offline
HTML, and a sizes file's table and plots)."""
