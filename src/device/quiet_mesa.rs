//! Mesa's Vulkan drivers (lavapipe included) probe for a Wayland display when the instance is
//! created, and libwayland prints `error: XDG_RUNTIME_DIR is invalid or not set in the
//! environment.` to stderr when that variable is unset or not an absolute path (a container, a CI
//! job, a cron job, `sudo`). Nothing has failed, but a user reading it thinks wgnn did.
//!
//! wgnn silences it where it comes from: before its first wgpu instance, once per process, an unset
//! or relative `XDG_RUNTIME_DIR` is set to the system's temporary folder (any absolute path
//! satisfies libwayland's check; the Wayland connection then fails quietly, as it should on a
//! machine without a display). A variable already set to an absolute path is left alone.
//!
//! Setting an environment variable races with other threads reading the environment (C's
//! `getenv` is not synchronised with Rust's `set_var`). It is done once, under a `Once`, as the
//! first thing [`crate::Gpu`] creation does; a program that creates its `Gpu` while other threads
//! call into C code reading the environment should set `XDG_RUNTIME_DIR` itself first (to any
//! absolute path), and wgnn then leaves it untouched.

use std::path::Path;
use std::sync::Once;

/// The variable libwayland checks.
pub const RUNTIME_DIR_ENV: &str = "XDG_RUNTIME_DIR";

/// Sets `XDG_RUNTIME_DIR` to the temporary folder if it is unset or not absolute; once per
/// process. Only on Unix systems other than macOS, where Mesa runs.
pub(crate) fn quiet_mesa_warnings() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if cfg!(all(unix, not(target_os = "macos"))) {
            let current = std::env::var_os(RUNTIME_DIR_ENV);
            if let Some(dir) = runtime_dir_replacement(current.as_deref().map(Path::new)) {
                std::env::set_var(RUNTIME_DIR_ENV, dir);
            }
        }
    });
}

/// The folder to set `XDG_RUNTIME_DIR` to when it is `current`: `None` when it is already an
/// absolute path; else the temporary folder if that is absolute, else `/tmp`.
pub fn runtime_dir_replacement(current: Option<&Path>) -> Option<std::path::PathBuf> {
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
}
