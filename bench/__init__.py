"""opstream's benchmarks: each scenario measures opstream and a baseline in the same run.

Run one with ``python -m bench SCENARIO`` or all with ``python -m bench all --quick``;
results and how to read them are in ``bench/RESULTS.md``.
"""
