//! Flows in other languages than Rust, and new projects in each: tests that
//! compile 12–18 MB components, tens of seconds of CPU each. They are a
//! test binary of their own so that cargo runs them after `all`, not beside
//! its timing-sensitive tests on the same cores.

// A test binary has no public API to document or keep reachable.
#![allow(unreachable_pub, missing_docs)]

// The same harness as `all`'s.
#[path = "../all/support/mod.rs"]
mod support;

mod languages;
mod new_flow;
