//! flowhost's integration tests: the real binary, on real sockets, with a
//! real webhook receiver. One test binary, one module per subject.

// A test binary has no public API to document or keep reachable.
#![allow(unreachable_pub, missing_docs)]

mod support;

mod capacity;
mod check;
mod connections;
mod console;
mod conversations;
mod delivery;
mod durability;
mod endpoint;
mod erasure;
mod failures;
mod hardening;
mod idempotency;
mod in_process;
mod inject_notify;
mod local;
mod masking;
mod openapi;
mod operability;
mod ordering;
mod postgres_store;
mod reload;
mod rest;
mod sandbox;
mod sessions;
mod several_hosts;
mod traces;
mod transformers;
mod waiting;
mod wit_versions;
