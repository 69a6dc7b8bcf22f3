"""Benchmarks: `python -m bench.<name> ...`; each prints the machine and its measurements."""
