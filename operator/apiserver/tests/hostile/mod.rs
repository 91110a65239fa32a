//! The parts of the hostile-body property test: what is served, and how bodies are mutated.

pub mod coverage;
pub mod fixtures;
pub mod mutate;
