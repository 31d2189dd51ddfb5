//! One member of a zip archive, read with its integrity checked: it must inflate to as many bytes
//! as the archive records, with the CRC-32 the archive records.
//!
//! The zip crate checks a member's CRC-32 only when a read reaches the member's end, and the
//! `.npy` reader stops at the array's last element, so a member with overwritten bytes that still
//! inflates used to be read as data. This reader counts and hashes every byte that passes through
//! it, and [`CheckedMember::finish`] reads what is left and compares; the CRC is computed here
//! (crc32fast, which the zip crate already uses) rather than inferred from the zip crate's
//! "Invalid checksum" I/O error, so a mismatch is told apart from other read errors.

use std::io::{self, Read};

use npyz::zip::read::ZipFile;
use npyz::zip::CompressionMethod;

pub(super) struct CheckedMember<'a> {
    file: ZipFile<'a>,
    hasher: crc32fast::Hasher,
    /// Bytes read so far, after inflation.
    read: u64,
}

impl<'a> CheckedMember<'a> {
    /// Checks what the records alone can show: a stored (uncompressed) member's two sizes must
    /// agree, and the compression method must be one this build inflates.
    pub(super) fn new(file: ZipFile<'a>) -> Result<CheckedMember<'a>, String> {
        let (stored, size) = (file.compressed_size(), file.size());
        match file.compression() {
            CompressionMethod::Stored if stored != size => {
                return Err(format!(
                    "the archive records {stored} stored bytes but a size of {size} for this uncompressed member; \
                     the file is damaged"
                ))
            }
            CompressionMethod::Stored
            | CompressionMethod::Deflated
            | CompressionMethod::Bzip2
            | CompressionMethod::Zstd => {}
            // The zip crate panics when asked to inflate any other method.
            other => {
                return Err(format!(
                    "compression method {other} is not supported (numpy writes stored or deflated members)"
                ))
            }
        }
        Ok(CheckedMember { file, hasher: crc32fast::Hasher::new(), read: 0 })
    }

    /// Reads the rest of the member and checks its size and CRC-32 against the archive's records.
    /// The error says what is wrong; the caller adds the file and the array.
    pub(super) fn finish(mut self) -> Result<(), String> {
        let recorded = self.file.size();
        let mut buf = vec![0u8; 64 << 10];
        while self.read < recorded {
            let want = (recorded - self.read).min(buf.len() as u64) as usize;
            match self.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "reading the member failed after {} of the {recorded} bytes the archive records ({e}); \
                         the file is damaged",
                        self.read
                    ))
                }
            }
        }
        if self.read < recorded {
            return Err(format!(
                "the member inflates to {} bytes but the archive records {recorded}; the file is damaged",
                self.read
            ));
        }
        // One byte past the recorded size, read around the hash: there should be none. At the
        // member's end the zip crate checks the CRC-32 itself and fails on a mismatch, which the
        // comparison below reports more clearly, so that error is only reported if ours passes.
        let past_end = self.file.read(&mut [0u8; 1]);
        if self.read > recorded || matches!(past_end, Ok(n) if n > 0) {
            return Err(format!(
                "the member holds more than the {recorded} bytes the archive records; the file is damaged"
            ));
        }
        let (crc, want) = (self.hasher.clone().finalize(), self.file.crc32());
        if crc != want {
            return Err(format!(
                "CRC-32 mismatch: the member's data has CRC-32 {crc:08x} but the archive records {want:08x}; \
                 the file is damaged"
            ));
        }
        past_end.map(|_| ()).map_err(|e| format!("reading the member's end failed ({e}); the file is damaged"))
    }
}

impl Read for CheckedMember<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}
