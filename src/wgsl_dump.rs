//! `WGNN_DUMP_WGSL=DIR`: every distinct pipeline the registry builds, written once into DIR as
//! the WGSL the engine compiles and a JSON file beside it (family, entry point, override
//! constants, layout), so that another WGSL compiler can check exactly what runs (`tools/wgsl_check`
//! compiles them with Dawn/Tint, the WebGPU implementation of Chrome). Unset, it costs one load
//! of a `OnceLock` per pipeline built.
//!
//! A dump is `<family>.<entry>.<hash>.wgsl` and `.json`, the hash (FNV-1a, stable across builds
//! and processes) over the source, the entry point and the constants: the same pipeline built by
//! many devices, threads or processes is the same pair of files. Each file is written to a
//! temporary name unique to its process and call, then renamed, so concurrent writers never
//! leave a torn file; the JSON is renamed last, so a JSON file means its WGSL is complete. A
//! folder that cannot be written is an error of the pipeline's creation, naming the path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::{Result, WgnnError};

/// Environment variable naming the folder the dumps go to; unset or empty: no dumps.
pub const DUMP_ENV: &str = "WGNN_DUMP_WGSL";

/// One pipeline as the registry builds it.
pub struct PipelineSource<'a> {
    /// The kernel family (its `shaders/<family>.wgsl`).
    pub family: &'a str,
    pub entry: &'a str,
    /// The family's source pieces, in the order the engine concatenates them.
    pub sources: &'a [&'a str],
    /// Override constants, in any order.
    pub constants: &'a [(&'a str, f64)],
    /// The pipeline layout's bindings in group 0, from binding 0, as WebGPU's
    /// `GPUBufferBindingType` names them ("uniform", "storage", "read-only-storage").
    pub bindings: &'a [&'a str],
}

/// The JSON written beside each WGSL file.
#[derive(serde::Serialize)]
struct DumpInfo<'a> {
    family: &'a str,
    entry_point: &'a str,
    /// The WGSL file beside this one.
    wgsl: &'a str,
    /// Override constants by name, as the engine passes them to pipeline creation (f64; a bool
    /// override as 0 or 1).
    constants: serde_json::Map<String, serde_json::Value>,
    /// Group 0's buffer bindings from binding 0 (see [`PipelineSource::bindings`]).
    bindings: &'a [&'a str],
}

/// The folder `$WGNN_DUMP_WGSL` names, read once per process; `None` when unset or empty.
pub(crate) fn dump_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os(DUMP_ENV).filter(|d| !d.is_empty()).map(PathBuf::from)).as_deref()
}

/// Writes `pipeline` into `dir` (created if missing) unless this process has already written it
/// there or the files exist; returns the WGSL file's path.
pub fn dump_to(dir: &Path, pipeline: &PipelineSource) -> Result<PathBuf> {
    static WRITTEN: Mutex<Option<HashSet<(PathBuf, u64)>>> = Mutex::new(None);
    let mut constants = pipeline.constants.to_vec();
    constants.sort_by(|a, b| a.0.cmp(b.0));
    let hash = pipeline_hash(pipeline.sources, pipeline.entry, &constants);
    let stem = format!("{}.{}.{hash:016x}", pipeline.family, pipeline.entry);
    let wgsl_path = dir.join(format!("{stem}.wgsl"));
    let json_path = dir.join(format!("{stem}.json"));
    let key = (dir.to_path_buf(), hash);
    // A poisoned lock only loses the memo: the files' existence is checked below anyway.
    if WRITTEN.lock().map(|w| w.as_ref().is_some_and(|w| w.contains(&key))).unwrap_or(false) {
        return Ok(wgsl_path);
    }
    if !json_path.exists() {
        std::fs::create_dir_all(dir).map_err(|source| WgnnError::Io { path: dir.to_path_buf(), source })?;
        write_renamed(&wgsl_path, pipeline.sources.concat().as_bytes())?;
        let info = DumpInfo {
            family: pipeline.family,
            entry_point: pipeline.entry,
            wgsl: &format!("{stem}.wgsl"),
            constants: constants
                .iter()
                .map(|(name, value)| (name.to_string(), serde_json::Value::from(*value)))
                .collect(),
            bindings: pipeline.bindings,
        };
        let json = serde_json::to_vec_pretty(&info)
            .map_err(|e| WgnnError::Data { path: json_path.clone(), detail: e.to_string() })?;
        write_renamed(&json_path, &json)?;
    }
    if let Ok(mut written) = WRITTEN.lock() {
        written.get_or_insert_with(HashSet::new).insert(key);
    }
    Ok(wgsl_path)
}

/// Writes `bytes` to a temporary file beside `path` named for this process and call, then
/// renames it over `path` (atomic on one file system: a reader sees the old file or the new
/// one). Not synced: a dump lost in a crash is written again by the next run.
fn write_renamed(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("dump");
    let tmp =
        path.with_file_name(format!(".{name}.tmp{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let written = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    written.map_err(|source| {
        // Best effort: the write error is the one to report.
        std::fs::remove_file(&tmp).ok();
        WgnnError::Io { path: path.to_path_buf(), source }
    })
}

/// FNV-1a (64 bits) over the source, the entry point and the sorted constants (name and f64
/// bits), each field ended by a byte no WGSL text contains. The layout is not hashed: a
/// family's bindings are fixed, so the source and entry point decide them.
fn pipeline_hash(sources: &[&str], entry: &str, sorted_constants: &[(&str, f64)]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ b as u64).wrapping_mul(PRIME);
        }
    };
    for piece in sources {
        feed(piece.as_bytes());
    }
    feed(&[0xff]);
    feed(entry.as_bytes());
    for (name, value) in sorted_constants {
        feed(&[0xff]);
        feed(name.as_bytes());
        feed(&value.to_bits().to_le_bytes());
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_tells_pipelines_apart() {
        // FNV-1a's published value for "a": the hash is stable, not std's unspecified hasher.
        let mut bytes_a = 0xcbf2_9ce4_8422_2325u64;
        bytes_a = (bytes_a ^ b'a' as u64).wrapping_mul(0x0000_0100_0000_01b3);
        assert_eq!(bytes_a, 0xaf63_dc4c_8601_ec8c);
        let base = pipeline_hash(&["fn f() {}"], "f", &[("WG", 64.0)]);
        assert_eq!(base, pipeline_hash(&["fn f() ", "{}"], "f", &[("WG", 64.0)]), "pieces are concatenated");
        assert_ne!(base, pipeline_hash(&["fn f() {}"], "g", &[("WG", 64.0)]));
        assert_ne!(base, pipeline_hash(&["fn f() {}"], "f", &[("WG", 32.0)]));
        assert_ne!(base, pipeline_hash(&["fn f() {}"], "f", &[("WX", 64.0)]));
        assert_ne!(base, pipeline_hash(&["fn f() {}"], "f", &[]));
    }

    #[test]
    fn threads_dumping_the_same_pipelines_leave_one_whole_pair_each() {
        let dir = std::env::temp_dir().join(format!("wgnn-dump-unit-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let source = "override WG: u32 = 64u;\n".repeat(2000);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (dir, source) = (&dir, &source);
                s.spawn(move || {
                    for wg in [32.0, 64.0] {
                        // Half the threads give the constants in the other order.
                        let constants =
                            if t % 2 == 0 { vec![("WG", wg), ("FLAG", 1.0)] } else { vec![("FLAG", 1.0), ("WG", wg)] };
                        let p = PipelineSource {
                            family: "fam",
                            entry: "main",
                            sources: &[source],
                            constants: &constants,
                            bindings: &["uniform", "storage"],
                        };
                        dump_to(dir, &p).unwrap();
                    }
                });
            }
        });
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names.len(), 4, "two pipelines, a .wgsl and a .json each, no temporary file left: {names:?}");
        for name in names.iter().filter(|n| n.ends_with(".json")) {
            assert!(name.starts_with("fam.main."), "{name}");
            let info: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
            assert_eq!(info["family"], "fam");
            assert_eq!(info["entry_point"], "main");
            assert_eq!(info["constants"]["FLAG"], 1.0);
            assert_eq!(info["bindings"], serde_json::json!(["uniform", "storage"]));
            assert!(info["constants"]["WG"] == 32.0 || info["constants"]["WG"] == 64.0, "{info}");
            let wgsl = std::fs::read_to_string(dir.join(info["wgsl"].as_str().unwrap())).unwrap();
            assert_eq!(wgsl, source);
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_an_io_error_naming_it() {
        let file = std::env::temp_dir().join(format!("wgnn-dump-not-a-folder-{}", std::process::id()));
        std::fs::write(&file, b"a file").unwrap();
        let dir = file.join("dumps");
        let p =
            PipelineSource { family: "fam", entry: "main", sources: &["fn main() {}"], constants: &[], bindings: &[] };
        let err = dump_to(&dir, &p).unwrap_err();
        assert!(matches!(&err, WgnnError::Io { path, .. } if *path == dir), "{err}");
        assert!(err.to_string().contains("wgnn-dump-not-a-folder"), "{err}");
        std::fs::remove_file(&file).ok();
    }
}
