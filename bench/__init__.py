"""The benchmark harness: config, loop, profiling, metrics, results, reports."""
