//! The `conveyor` binary's library: wiring of the roles (`app`) and the benchmark (`bench`).
//! Tests start Conveyor through `app`, exactly as `main` does.

pub mod app;
pub mod bench;
