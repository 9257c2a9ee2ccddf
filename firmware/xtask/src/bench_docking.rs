//! `cargo xtask bench docking`: the docking API under load (`wrk`) against the in-process
//! engine measured in the same run, and peak memory with 64 concurrent 10 MiB uploads.
//!
//! The measuring code is the `docking` bench target of the `sealgated` package, built in the
//! release (bench) profile so that the daemon and the engine are both optimised; `bench.rs`
//! installs and checks its tools (`wrk`, `curl`, `openssl`, `taskset`) and runs it.

/// What `cargo xtask bench docking` installs: the build's packages, the load generator, the
/// client that makes its test keys' requests, the PKI tool and `taskset`.
#[cfg(test)]
pub(crate) fn packages() -> Vec<&'static str> {
    crate::bench::docking_packages()
}
