"""Benchmark of advance_session_statuses() against a naive tick and a lower bound.

Run it with ``make bench`` or ``python -m bench.tick_bench --help``.
"""
