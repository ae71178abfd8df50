"""Helpers the tests and benchmarks share (child processes, a throwaway Redis, wrk load); not part of the
product, which is `recsys_assets/`."""
