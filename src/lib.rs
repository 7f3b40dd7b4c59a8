//! Clinic Auth: authentication for clinics, as one binary.
//!
//! Dependencies point inward: `http` -> `services` -> `domain` and the
//! `storage` traits. Only `app` knows which concrete store is in use.

// Unsafe code only where a system call or the argon2 memory needs it, each
// place allowed by name with a SAFETY note (services/passwords.rs,
// server.rs).
#![deny(unsafe_code)]

pub mod app;
pub mod background;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod email;
pub mod error;
pub mod http;
pub mod metrics;
pub mod private_fs;
pub mod server;
pub mod services;
pub mod storage;
pub mod telemetry;
