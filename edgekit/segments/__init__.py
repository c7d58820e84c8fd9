"""Pipeline-parallel segments: a model split at module boundaries, each segment exported to its own target, the
chain validated end to end against the original and benched as a pipeline (one worker per stage).

``split`` (torch side) makes the segments; ``export`` writes the run; ``chain`` and ``pipeline`` (numpy and the
runtimes only) run them; ``worker`` runs those in an isolated process; ``bench`` measures a segmented run."""
