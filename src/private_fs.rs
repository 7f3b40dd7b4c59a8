//! Owner-only directories and files for what the service keeps outside the
//! database (generated secrets, the audit key, audit checkpoints): each of
//! them is a secret or evidence, so no other local user may read or change it.

use std::path::Path;

/// Creates `dir` and any missing parents with mode 0700 (existing ones are
/// left as they are).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Open options that create a file with mode 0600.
pub fn file_options() -> std::fs::OpenOptions {
    #[allow(unused_mut)]
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}
