//! Loopback helpers shared by the test binaries.

/// A port on 127.0.0.1 that was free a moment ago. Another process may take
/// it before the caller binds it; callers that start servers retry.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("cannot find a free port")
        .port()
}
