//! Clinic Auth: authentication for clinics, as one binary.
//!
//! Dependencies point inward: `http` -> `services` -> `domain` and the
//! `storage` traits. Only `app` knows which concrete store is in use.

pub mod domain;
pub mod storage;
