//! weft-bench measures weft against a baseline taken in the same run and prints one JSON line
//! per figure: `{"name","value","unit","baseline","baseline_value","ratio"}`.
//!
//! It must never tune a measurement to flatter weft: every figure states its baseline, and the
//! method of each suite is written down in BENCHMARKS.md next to its results.

pub mod convergence;
pub mod names;
pub mod overlay;
pub mod peers;
pub mod raft;
pub mod report;
pub mod runtime;
pub mod scale;
pub mod state;
