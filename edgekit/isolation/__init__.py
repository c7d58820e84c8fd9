"""Process isolation: every artifact is opened and run in a worker process of its own (its own process group), so
a runtime that aborts natively or hangs becomes a CRASH or TIMEOUT row and never takes edgekit down. Export,
validate and bench all run artifacts through it."""
