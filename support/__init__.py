"""Support shared by tests, benchmarks and load tests: starting real servers."""
