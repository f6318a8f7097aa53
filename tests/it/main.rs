//! grantbridge's integration tests: the real code against the sandbox (Google on
//! 127.0.0.1), the real binary as a child process, and Google's own Python
//! libraries and runtime where interoperability is the point.

mod bad_control_plane;
mod cli;
mod conformance;
mod credentials;
mod daemon;
mod disk;
mod docs;
mod examples;
mod fidelity;
mod helpers;
mod interop;
mod invoke;
mod observability;
mod online;
mod packaging;
mod security;
mod traces;
mod webhooks;
