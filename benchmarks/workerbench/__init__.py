"""The job benchmark (``benchmarks/worker.py``): systems, scenarios, servers and the report."""
