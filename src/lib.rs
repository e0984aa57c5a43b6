//! The `conveyor` binary's library: wiring of the roles (`app`), the benchmark (`bench`) and
//! the operators' command line (`cli`).
//! Tests start Conveyor through `app`, exactly as `main` does.

pub mod app;
pub mod bench;
pub mod cli;
pub mod telemetry;
