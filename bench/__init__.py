"""Benchmarks (run as scripts: .venv/bin/python bench/NAME.py); figures in bench/results.md."""
