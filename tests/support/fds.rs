//! File descriptors of a child process: how many it holds, and a limit on
//! them, for tests that check a flood cannot run the service out of them.

// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::process::Command;

/// How many descriptors process `pid` has open now.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Makes `cmd` start with at most `limit` descriptors (soft and hard, so
/// the service cannot raise it).
#[cfg(unix)]
pub fn limit_fds(cmd: &mut Command, limit: libc::rlim_t) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe, and the closure touches no
    // memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}
