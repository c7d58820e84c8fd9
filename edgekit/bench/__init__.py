"""Benchmarking: every artifact of a run on its runtime in a worker process, against the torch model; how latency
and throughput are timed, and the measurement that comes back."""
