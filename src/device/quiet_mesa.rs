//! Mesa's Vulkan drivers (lavapipe included) probe for a Wayland display when the instance is
//! created, and libwayland prints `error: XDG_RUNTIME_DIR is invalid or not set in the
//! environment.` to stderr when that variable is unset or not an absolute path (a container, a CI
//! job, a cron job, `sudo`). Nothing has failed, but a user reading it thinks wgnn did.
//!
//! The cure is to give the variable an absolute value before the instance exists: an unset or
//! relative `XDG_RUNTIME_DIR` is replaced by the system's temporary folder (any absolute path
//! satisfies libwayland's check; the Wayland connection then fails quietly, as it should on a
//! machine without a display). A variable already set to an absolute path is left alone. Only on
//! Linux, where the message comes from. Child processes started afterwards inherit the new value.
//!
//! Setting an environment variable while another thread reads the environment is undefined
//! behaviour (C's `getenv`, called by `getaddrinfo` or by Mesa itself, is not synchronised with
//! Rust's `set_var`; Rust 2024 marks `set_var` unsafe for this reason). So [`crate::Gpu`] creation
//! does it only when the process has a single thread at that moment (`/proc/self/task` holds one
//! entry), and otherwise leaves the environment untouched and Mesa's lines show. A program that
//! has started threads by the time it creates its `Gpu` silences them by calling
//! [`quiet_mesa`] as the first line of `main`, or by setting `XDG_RUNTIME_DIR` itself.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The variable libwayland checks.
pub(crate) const RUNTIME_DIR_ENV: &str = "XDG_RUNTIME_DIR";

/// Replaces an unset or relative `XDG_RUNTIME_DIR` by the temporary folder (on Linux; elsewhere
/// it does nothing), so that Mesa's Vulkan drivers do not print "XDG_RUNTIME_DIR is invalid or
/// not set" when a [`crate::Gpu`] is created. A value that is already an absolute path is kept.
///
/// `Gpu::new` does this itself when the process is single-threaded; call this first in `main`
/// when your program starts threads before it creates its `Gpu`:
///
/// ```no_run
/// fn main() -> Result<(), wgnn::WgnnError> {
///     // SAFETY: the first line of `main`; no other thread exists yet.
///     unsafe { wgnn::quiet_mesa() };
///     let _gpu = wgnn::Gpu::new()?;
///     Ok(())
/// }
/// ```
///
/// # Safety
///
/// It sets an environment variable: no other thread may read or write the environment while it
/// runs (the contract of [`std::env::set_var`]). Calling it before any thread is started is safe.
pub unsafe fn quiet_mesa() {
    if cfg!(target_os = "linux") {
        replace_runtime_dir();
    }
}

/// What [`crate::Gpu`] creation calls before its wgpu instance: replaces the variable only on
/// Linux and only while this thread is the process's only one, where nothing else can be reading
/// the environment (and, being alone, nothing can start a thread meanwhile).
pub(crate) fn quiet_mesa_if_single_threaded() {
    if cfg!(target_os = "linux") && needs_replacement(std::env::var_os(RUNTIME_DIR_ENV).as_deref()) && single_threaded()
    {
        replace_runtime_dir();
    }
}

/// Whether the process has exactly one thread; `false` when that cannot be told.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

fn needs_replacement(current: Option<&OsStr>) -> bool {
    runtime_dir_replacement(current.map(Path::new)).is_some()
}

fn replace_runtime_dir() {
    let current = std::env::var_os(RUNTIME_DIR_ENV);
    if let Some(dir) = runtime_dir_replacement(current.as_deref().map(Path::new)) {
        std::env::set_var(RUNTIME_DIR_ENV, dir);
    }
}

/// The folder to set `XDG_RUNTIME_DIR` to when it is `current`: `None` when it is already an
/// absolute path; else the temporary folder if that is absolute, else `/tmp`.
pub(crate) fn runtime_dir_replacement(current: Option<&Path>) -> Option<PathBuf> {
    if current.is_some_and(Path::is_absolute) {
        return None;
    }
    let tmp = std::env::temp_dir();
    Some(if tmp.is_absolute() { tmp } else { "/tmp".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unset_or_relative_folder_is_replaced() {
        assert_eq!(runtime_dir_replacement(Some(Path::new("/run/user/1000"))), None);
        assert!(runtime_dir_replacement(None).is_some_and(|p| p.is_absolute()));
        assert!(runtime_dir_replacement(Some(Path::new("relative/dir"))).is_some_and(|p| p.is_absolute()));
        assert!(runtime_dir_replacement(Some(Path::new(""))).is_some_and(|p| p.is_absolute()));
    }

    #[test]
    fn a_second_live_thread_is_seen() {
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || wait.recv());
        assert!(!single_threaded(), "two threads alive, yet counted as one");
        stop.send(()).unwrap();
        other.join().unwrap().unwrap();
    }
}
