//! The sandbox: Google (and later the control plane) on 127.0.0.1.
//!
//! Everything binds port 0 and is started in-process by tests, the demo and
//! `grantbridge sandbox`. It must never be reachable from production code paths.
