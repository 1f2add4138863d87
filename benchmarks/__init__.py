"""nbd's benchmarks: `bench_<name>.py` modules run by `scripts/bench` through `benchmarks.harness`."""
