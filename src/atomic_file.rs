//! Files written whole or not at all: a temporary file in the destination's folder, synced,
//! then renamed over the destination. A crash (or a full disk) at any moment leaves the old file
//! or the new one, never a truncated one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, WgnnError};

/// The temporary file beside `path` that a write goes through: `.{stem}.tmp{pid}.{ext}`, hidden,
/// unique to this process, and keeping the extension (a PNG encoder picks its format from it).
pub fn temporary_path(path: &Path) -> Result<PathBuf> {
    let not_a_file = || WgnnError::Data { path: path.to_path_buf(), detail: "not a file path".into() };
    let stem = path.file_stem().ok_or_else(not_a_file)?;
    let mut name = std::ffi::OsString::from(".");
    name.push(stem);
    name.push(format!(".tmp{}", std::process::id()));
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    Ok(path.with_file_name(name))
}

/// Whether `name` is a temporary file name made by [`temporary_path`], and the process id in it.
pub fn temporary_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, after) = rest.rsplit_once(".tmp")?;
    after.split('.').next()?.parse().ok()
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        std::fs::File::create(tmp)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|source| WgnnError::Io { path: path.to_path_buf(), source })
    })
}

/// Lets `write` create the temporary file beside `path` (for writers that take a path), then
/// syncs it and renames it over `path`. On any error the temporary file is removed.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temporary_path(path)?;
    let io = |source| WgnnError::Io { path: path.to_path_buf(), source };
    let written = write(&tmp).and_then(|_| {
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).and_then(|_| std::fs::rename(&tmp, path)).map_err(io)
    });
    if let Err(e) = written {
        // Best effort: the temporary file may not exist, and the write error is the one to report.
        std::fs::remove_file(&tmp).ok();
        return Err(e);
    }
    // Make the rename itself durable (best effort: not every platform can sync a folder).
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().ok();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_keep_the_extension_and_name_their_process() {
        let tmp = temporary_path(Path::new("out/curves.png")).unwrap();
        let name = tmp.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(name, format!(".curves.tmp{}.png", std::process::id()));
        assert_eq!(temporary_owner(&name), Some(std::process::id()));
        assert_eq!(temporary_owner("curves.png"), None);
        assert_eq!(temporary_owner(".last.tmp12"), Some(12));
    }
}
