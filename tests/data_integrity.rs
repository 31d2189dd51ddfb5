//! Damaged `.npz` archives: a member whose bytes were overwritten (it still inflates, but its
//! CRC-32 no longer matches), sizes that disagree with the zip's records, a truncated archive, a
//! member the zip reader cannot open. Each must be a `WgnnError::Data` naming the file and the
//! array, never data read as if it were whole, never a panic. The archives are made here and
//! patched byte by byte (the zip layout: APPNOTE.TXT, sections 4.3.7, 4.3.12 and 4.3.16).

use std::fs::File;
use std::io::{BufWriter, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use npyz::npz::NpzWriter;
use npyz::zip::write::FileOptions;
use npyz::zip::{CompressionMethod, ZipArchive};
use npyz::{AutoSerialize, WriterBuilder};
use wgnn::data::Dataset;
use wgnn::internals::rng::Rng;
use wgnn::WgnnError;

/// A fresh folder per test, so tests running in parallel never share a file.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgnn-data-integrity-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn add<T: AutoSerialize + Copy>(
    npz: &mut NpzWriter<BufWriter<File>>,
    options: FileOptions,
    name: &str,
    shape: &[u64],
    data: &[T],
) {
    let mut w = npz.array::<T>(name, options).unwrap().default_dtype().shape(shape).begin_nd().unwrap();
    w.extend(data.iter().cloned()).unwrap();
    w.finish().unwrap();
}

/// `x`: u8 (64, 64) of seeded random bytes, `y`: i64 (64,) labels 0..10, each member written with
/// `method` (deflated at `level`, 0-9). Returns the pixels.
fn write_npz(path: &Path, method: CompressionMethod, level: Option<i32>) -> Vec<u8> {
    let options = FileOptions::default().compression_method(method).compression_level(level);
    let mut rng = Rng::new(5);
    let x: Vec<u8> = (0..64 * 64).map(|_| rng.next_u64() as u8).collect();
    let y: Vec<i64> = (0..64).map(|r| r % 10).collect();
    let mut npz = NpzWriter::create(path).unwrap();
    add(&mut npz, options, "x", &[64, 64], &x);
    add(&mut npz, options, "y", &[64], &y);
    x
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn put_u32(b: &mut [u8], at: usize, v: usize) {
    b[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
}

/// The end-of-central-directory record: the last 22 bytes (the writer adds no comment).
fn end_record(zip: &[u8]) -> usize {
    let end = zip.len() - 22;
    assert_eq!(zip[end..end + 4], *b"PK\x05\x06", "end of central directory record");
    end
}

/// The offset of `member`'s central-directory record (name at +46, its length at +28).
fn central_entry(zip: &[u8], member: &str) -> usize {
    let end = end_record(zip);
    let mut at = u32_at(zip, end + 16);
    for _ in 0..u16_at(zip, end + 10) {
        assert_eq!(zip[at..at + 4], *b"PK\x01\x02", "central directory record");
        let (name, extra, comment) = (u16_at(zip, at + 28), u16_at(zip, at + 30), u16_at(zip, at + 32));
        if &zip[at + 46..at + 46 + name] == member.as_bytes() {
            return at;
        }
        at += 46 + name + extra + comment;
    }
    panic!("no member {member} in the archive");
}

/// Where `member`'s stored (possibly compressed) bytes lie: after its local header (name length
/// at +26, extra length at +28), as long as the central directory's compressed size (+20).
fn member_bytes(zip: &[u8], member: &str) -> Range<usize> {
    let entry = central_entry(zip, member);
    let local = u32_at(zip, entry + 42);
    assert_eq!(zip[local..local + 4], *b"PK\x03\x04", "local file header");
    let start = local + 30 + u16_at(zip, local + 26) + u16_at(zip, local + 28);
    start..start + u32_at(zip, entry + 20)
}

fn err_text<T: std::fmt::Debug>(r: wgnn::Result<T>) -> String {
    let e = r.expect_err("expected an error");
    assert!(matches!(e, WgnnError::Data { .. }), "expected WgnnError::Data, got {e:?}");
    e.to_string()
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} should mention {p:?}");
    }
}

/// 14 bytes overwritten in the middle of `member`'s stored bytes.
fn overwrite_14_bytes(zip: &mut [u8], member: &str) {
    let bytes = member_bytes(zip, member);
    let at = bytes.start + bytes.len() / 2;
    for b in &mut zip[at..at + 14] {
        *b = !*b;
    }
}

#[test]
fn an_overwritten_stored_member_is_refused_naming_file_and_array() {
    let dir = temp_dir("stored");
    let good = dir.join("good.npz");
    write_npz(&good, CompressionMethod::Stored, None);
    assert_eq!(Dataset::from_npz(&good, "x", "y").unwrap().rows, 64);
    for member in ["x", "y"] {
        let mut zip = std::fs::read(&good).unwrap();
        overwrite_14_bytes(&mut zip, &format!("{member}.npy"));
        let damaged = dir.join(format!("damaged_{member}.npz"));
        std::fs::write(&damaged, &zip).unwrap();
        let msg = err_text(Dataset::from_npz(&damaged, "x", "y"));
        assert_mentions(&msg, &[&format!("damaged_{member}.npz"), &format!("array `{member}`"), "CRC-32"]);
    }
}

#[test]
fn an_overwritten_deflated_member_that_still_inflates_is_refused() {
    let dir = temp_dir("deflated");
    let good = dir.join("good.npz");
    // Level 0 writes the deflate stream as stored blocks, so bytes overwritten inside one change
    // the data but not its length: the stream still inflates, to altered pixels.
    let pixels = write_npz(&good, CompressionMethod::Deflated, Some(0));
    let mut zip = std::fs::read(&good).unwrap();
    overwrite_14_bytes(&mut zip, "x.npy");
    let damaged = dir.join("damaged.npz");
    std::fs::write(&damaged, &zip).unwrap();
    // The premise: the damaged member inflates to its recorded size, with altered pixels.
    let mut archive = ZipArchive::new(File::open(&damaged).unwrap()).unwrap();
    let mut member = archive.by_name("x.npy").unwrap();
    assert_eq!(member.compression(), CompressionMethod::Deflated);
    let size = member.size();
    let mut inflated = Vec::new();
    (&mut member).take(size).read_to_end(&mut inflated).unwrap();
    assert_eq!(inflated.len() as u64, size, "the damaged member still inflates to its recorded size");
    assert_ne!(inflated[inflated.len() - pixels.len()..], pixels[..], "and its pixels are altered");
    // The zip crate's own check, which fires only at the member's end: the data ends here and
    // its checksum is wrong.
    assert!(member.read(&mut [0u8; 1]).is_err(), "the zip crate's checksum error at the member's end");
    drop(member);
    let msg = err_text(Dataset::from_npz(&damaged, "x", "y"));
    assert_mentions(&msg, &["damaged.npz", "array `x`", "CRC-32", "damaged"]);

    // At the default level the stream is Huffman-coded: what 14 overwritten bytes do to it depends
    // on the encoder (it may fail to inflate, or inflate to more, fewer or altered bytes), but
    // every outcome is an error naming the file and the array.
    write_npz(&good, CompressionMethod::Deflated, None);
    for member in ["x", "y"] {
        let mut zip = std::fs::read(&good).unwrap();
        overwrite_14_bytes(&mut zip, &format!("{member}.npy"));
        std::fs::write(&damaged, &zip).unwrap();
        let msg = err_text(Dataset::from_npz(&damaged, "x", "y"));
        assert_mentions(&msg, &["damaged.npz", &format!("array `{member}`"), "damaged"]);
    }
}

#[test]
fn sizes_that_disagree_with_the_zip_records_are_refused() {
    let dir = temp_dir("sizes");
    for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
        let good = dir.join("good.npz");
        write_npz(&good, method, None);
        let zip = std::fs::read(&good).unwrap();
        let entry = central_entry(&zip, "y.npy");
        let size = u32_at(&zip, entry + 24);
        // The recorded uncompressed size (+24) one byte off either way.
        for recorded in [size - 1, size + 1] {
            let mut bad = zip.clone();
            put_u32(&mut bad, entry + 24, recorded);
            let path = dir.join("sizes.npz");
            std::fs::write(&path, &bad).unwrap();
            let msg = err_text(Dataset::from_npz(&path, "x", "y"));
            assert_mentions(&msg, &["sizes.npz", "array `y`", &recorded.to_string()]);
        }
    }
}

#[test]
fn a_truncated_archive_is_a_clear_error() {
    let dir = temp_dir("truncated");
    let good = dir.join("good.npz");
    write_npz(&good, CompressionMethod::Deflated, None);
    let zip = std::fs::read(&good).unwrap();
    for keep in [zip.len() - 1, zip.len() - 22, zip.len() / 2, 100, 4] {
        let path = dir.join("cut.npz");
        std::fs::write(&path, &zip[..keep]).unwrap();
        assert_mentions(&err_text(Dataset::from_npz(&path, "x", "y")), &["cut.npz", "not a valid .npz"]);
    }
}

#[test]
fn a_member_marked_as_aes_encrypted_is_an_error_not_a_panic() {
    // An AES extra field (0x9901, APPNOTE 7.2.3.4 / WinZip AE-2) on a member whose encryption bit
    // is clear: the zip crate's `by_name` unwraps its password check on it and panics.
    let dir = temp_dir("aes");
    let good = dir.join("good.npz");
    write_npz(&good, CompressionMethod::Stored, None);
    let mut zip = std::fs::read(&good).unwrap();
    let entry = central_entry(&zip, "x.npy");
    let (name, extra) = (u16_at(&zip, entry + 28), u16_at(&zip, entry + 30));
    let aes: [u8; 11] = [0x01, 0x99, 7, 0, 2, 0, b'A', b'E', 3, 0, 0];
    zip.splice(entry + 46 + name + extra..entry + 46 + name + extra, aes);
    zip[entry + 30..entry + 32].copy_from_slice(&((extra + aes.len()) as u16).to_le_bytes());
    let end = end_record(&zip);
    let directory_size = u32_at(&zip, end + 12);
    put_u32(&mut zip, end + 12, directory_size + aes.len());
    let path = dir.join("aes.npz");
    std::fs::write(&path, &zip).unwrap();
    assert_mentions(&err_text(Dataset::from_npz(&path, "x", "y")), &["aes.npz", "array `x`", "encrypted"]);
}
