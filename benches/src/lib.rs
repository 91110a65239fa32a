//! Benchmark harnesses.
