//! A checkpoint folder owned by one training run at a time: `fit` takes an exclusive lock on
//! `dir/.wgnn.lock` for as long as it runs (the operating system drops it when the process ends,
//! however it ends), so a second run given the same folder fails at once instead of mixing its
//! files with the first's. Holding the lock, it removes what a killed writer left behind: the
//! temporary files of `last.safetensors` and `best.safetensors` (see [`crate::atomic_file`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::atomic_file::temporary_owner;
use crate::error::{Result, WgnnError};

/// The lock file's name inside a checkpoint folder.
pub const LOCK_FILE: &str = ".wgnn.lock";

/// Held while a run writes into its checkpoint folder; the lock goes with it.
#[derive(Debug)]
pub(crate) struct CheckpointDirLock {
    _file: File,
}

impl CheckpointDirLock {
    /// Creates `dir` if needed, locks it, and removes stale temporary checkpoint files.
    pub(crate) fn acquire(dir: &Path) -> Result<CheckpointDirLock> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WgnnError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(WgnnError::invalid(
                    "fit",
                    format!(
                        "checkpoint folder {} is in use by another training run (it holds {}): give this run \
                         a folder of its own, or wait for the other to end",
                        dir.display(),
                        lock_path.display()
                    ),
                ))
            }
            Err(TryLockError::Error(source)) => return Err(WgnnError::Io { path: lock_path, source }),
        }
        remove_stale_temporaries(dir)?;
        Ok(CheckpointDirLock { _file: file })
    }
}

/// Removes `.last.tmp…` and `.best.tmp…` files: with the folder locked, no writer is at work on
/// them. (Files of other names are the user's, and are left alone.)
fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| WgnnError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.starts_with(".last.") || name.starts_with(".best.");
        if ours && temporary_owner(name).is_some() {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|source| WgnnError::Io { path, source })?;
        }
    }
    Ok(())
}
