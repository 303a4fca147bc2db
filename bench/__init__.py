"""Benchmarks that print figures (not tests); each file runs as `python bench/NAME.py`."""
