//! The autotuner's picks on disk: one JSON file per device (adapter name, driver, driver version
//! and crate version) in the user's cache folder, so that a later run on the same device plans
//! the same kernels without timing them again. Written whole or not at all
//! ([`crate::atomic_file`]); a file that cannot be read, parsed, or belongs to another device or
//! version is ignored (and replaced by the next write), never an error: the cache only saves time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;
use crate::error::{Result, WgnnError};

/// Environment variable naming the folder of the cache (default: the user's cache folder,
/// `$XDG_CACHE_HOME/wgnn` or `~/.cache/wgnn`; `%LOCALAPPDATA%\wgnn` on Windows).
pub const CACHE_DIR_ENV: &str = "WGNN_CACHE_DIR";

/// The file's format tag: a file without it (or another version of it) is ignored. Bumped where
/// the candidates change, so that picks timed before are timed again (2: the subgroup kernel by
/// scalars for products whose dimensions are not multiples of 4; 3: its 8-column tiles).
const FORMAT: &str = "wgnn-matmul-picks-3";

/// What a pick is valid for: a file written for any other device, driver or crate version is not
/// read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceIdentity {
    pub adapter: String,
    pub backend: String,
    pub driver: String,
    pub driver_info: String,
    pub crate_version: String,
}

impl DeviceIdentity {
    pub(crate) fn of(info: &wgpu::AdapterInfo) -> DeviceIdentity {
        DeviceIdentity {
            adapter: info.name.clone(),
            backend: format!("{:?}", info.backend),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// One stored pick: the kernel's name for the product `key` under the profile `profile`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredPick {
    /// The device profile's fingerprint (policy, features, workgroup shapes).
    pub profile: String,
    pub key: String,
    pub kernel: String,
    /// Seconds of the fastest run; `None` where the tuning budget was spent and the static choice
    /// was kept untimed.
    pub seconds: Option<f64>,
    /// Candidates timed.
    pub timed: usize,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: String,
    device: DeviceIdentity,
    picks: Vec<StoredPick>,
}

/// The cache file of one device.
#[derive(Clone, Debug)]
pub(crate) struct TuneCache {
    path: PathBuf,
    device: DeviceIdentity,
}

/// The folder the cache lives in: `dir` if given, else `$WGNN_CACHE_DIR`, else the user's cache
/// folder; `None` where there is no home to find one in.
pub(crate) fn cache_dir(dir: Option<&Path>) -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = dir {
        return Some(dir.to_path_buf());
    }
    if let Some(dir) = env(CACHE_DIR_ENV) {
        return Some(dir);
    }
    if cfg!(windows) {
        return env("LOCALAPPDATA").map(|d| d.join("wgnn"));
    }
    if cfg!(target_os = "macos") {
        return env("HOME").map(|h| h.join("Library/Caches/wgnn"));
    }
    env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache"))).map(|d| d.join("wgnn"))
}

impl TuneCache {
    /// The cache of `device` in `dir`: one file per device identity, named by its checksum (the
    /// identity itself is checked on reading).
    pub(crate) fn new(dir: &Path, device: DeviceIdentity) -> TuneCache {
        let id = serde_json::to_string(&device).unwrap_or_default();
        let path = dir.join(format!("matmul-picks-{:08x}.json", crc32fast::hash(id.as_bytes())));
        TuneCache { path, device }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The stored picks by (profile, key); empty where the file is missing, unreadable, corrupt
    /// or another device's.
    pub(crate) fn load(&self) -> HashMap<(String, String), StoredPick> {
        let Ok(text) = std::fs::read_to_string(&self.path) else { return HashMap::new() };
        match serde_json::from_str::<CacheFile>(&text) {
            Ok(file) if file.format == FORMAT && file.device == self.device => {
                file.picks.into_iter().map(|p| ((p.profile.clone(), p.key.clone()), p)).collect()
            }
            _ => HashMap::new(),
        }
    }

    /// Adds `pick` to the file (a pick already stored for its profile and key is kept: the first
    /// process to tune a shape decides it for every later one), creating the folder if missing.
    pub(crate) fn store(&self, pick: StoredPick) -> Result<()> {
        let mut picks = self.load();
        picks.entry((pick.profile.clone(), pick.key.clone())).or_insert(pick);
        let mut picks: Vec<StoredPick> = picks.into_values().collect();
        picks.sort_by(|a, b| (&a.profile, &a.key).cmp(&(&b.profile, &b.key)));
        let file = CacheFile { format: FORMAT.into(), device: self.device.clone(), picks };
        let json = serde_json::to_string_pretty(&file)
            .map_err(|e| WgnnError::invalid("tune cache", format!("cannot encode the picks: {e}")))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| WgnnError::Io { path: dir.to_path_buf(), source })?;
        }
        write_atomic(&self.path, json.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(adapter: &str) -> DeviceIdentity {
        DeviceIdentity {
            adapter: adapter.into(),
            backend: "Vulkan".into(),
            driver: "d".into(),
            driver_info: "1.0".into(),
            crate_version: "0.1.0".into(),
        }
    }

    fn pick(key: &str, kernel: &str) -> StoredPick {
        StoredPick { profile: "p".into(), key: key.into(), kernel: kernel.into(), seconds: Some(1e-4), timed: 3 }
    }

    #[test]
    fn picks_round_trip_and_the_first_stored_wins() {
        let dir = std::env::temp_dir().join(format!("wgnn-tune-cache-unit-{}", std::process::id()));
        let cache = TuneCache::new(&dir, identity("a"));
        cache.store(pick("k1", "subgroup")).unwrap();
        cache.store(pick("k2", "register4x8")).unwrap();
        cache.store(pick("k1", "tiled")).unwrap();
        let loaded = cache.load();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[&("p".to_string(), "k1".to_string())].kernel, "subgroup");
        // Another device's cache is another file, and a file naming another device is not read.
        let other = TuneCache::new(&dir, identity("b"));
        assert_ne!(other.path(), cache.path());
        std::fs::copy(cache.path(), other.path()).unwrap();
        assert!(other.load().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Thousands of seeded random mutations of a valid cache file (bytes flipped, cut, inserted,
    /// numbers replaced by huge ones): each loads as its picks or as nothing, never a panic, and
    /// the next store replaces it with a file that loads (issue 21's fuzzing of the loaders).
    #[test]
    fn mutated_cache_files_load_as_picks_or_nothing() {
        let dir = std::env::temp_dir().join(format!("wgnn-tune-cache-fuzz-{}", std::process::id()));
        let cache = TuneCache::new(&dir, identity("a"));
        for (i, kernel) in ["subgroup", "register4x8", "tiled", "tile 64x64x16/4x4"].iter().enumerate() {
            cache.store(pick(&format!("k{i} 128x784x64"), kernel)).unwrap();
        }
        let valid = std::fs::read(cache.path()).unwrap();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut whole, mut dropped) = (0, 0);
        for case in 0..3000 {
            let mut b = valid.clone();
            match next(5) {
                0 => b[next(valid.len())] ^= 1 << next(8),
                1 => b.truncate(next(valid.len())),
                2 => {
                    let at = next(b.len());
                    b.splice(at..at, b"18446744073709551615".iter().copied());
                }
                3 => b[next(valid.len())] = b"{}[]\",:0-e\\ "[next(12)],
                _ => {
                    let at = next(b.len());
                    b.drain(at..(at + next(32)).min(b.len()));
                }
            }
            std::fs::write(cache.path(), &b).unwrap();
            let loaded = cache.load();
            assert!(loaded.len() <= 4, "case {case}: {} picks from a file of 4", loaded.len());
            if loaded.len() == 4 {
                whole += 1;
            } else {
                dropped += 1;
            }
            if case % 100 == 0 {
                cache.store(pick("after", "tiled")).unwrap();
                assert!(cache.load().contains_key(&("p".to_string(), "after".to_string())), "case {case}");
            }
        }
        assert!(whole > 0 && dropped > 0, "{whole} files read whole, {dropped} not: the mutations did nothing");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
