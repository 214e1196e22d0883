"""Benchmarks of flask-mpesa-monitor against the alternatives (see bench/RESULTS.md).

Run them all with ``./scripts/bench.sh``; each module also runs alone
(``python -m bench.bench_inprocess``). ``tests/test_bench_smoke.py`` runs each with tiny
counts so that none of them rots.
"""
