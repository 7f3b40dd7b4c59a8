//! Long-lived background loops that must answer quickly.

use std::future::Future;

use tokio::sync::oneshot;

/// Runs `task` on an OS thread of its own (a single-threaded runtime), so
/// its wake-ups do not queue behind the request handlers on the shared
/// runtime. Used for loops that hold SQLite's one writer while they wait
/// between statements: there, every queued wake-up is time nobody else can
/// write. The receiver completes when `task` has finished.
pub fn spawn_dedicated<F>(name: &str, task: F) -> std::io::Result<oneshot::Receiver<()>>
where
    F: Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            runtime.block_on(task);
            let _ = done.send(());
        })?;
    Ok(finished)
}
