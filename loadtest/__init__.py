"""Load tests and benchmarks: N concurrent callers over real sockets, p50/p95/p99 per stage."""
