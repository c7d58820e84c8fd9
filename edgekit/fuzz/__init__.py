"""The fuzzer (``edgekit fuzz``): random small networks through every backend, each target classified, and the
worst failure caught: an artifact that passes its gates while it computes something else (SILENT)."""
