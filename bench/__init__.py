"""Benchmarks of mirror against cp, rsync and rclone; run by hand, never in CI.

Entry points: ``python -m bench.run`` (throughput table) and ``python -m bench.latency``
(change-to-target latency in watch mode). See bench/README.md.
"""
