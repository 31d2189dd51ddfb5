//! The memory budget: how many bytes of device memory the engine plans to use
//! ([`crate::GpuOptions::memory_budget`], `$WGNN_MEMORY_BUDGET`, else a default from the adapter),
//! used to size evaluation batches and to decide whether the training set stays resident or streams
//! (`model/stream.rs`).
//!
//! wgpu 30 reports no device memory size, only the largest buffer it allows
//! (`max_buffer_size`), so the default is that, capped at [`HARDWARE_BUDGET_CAP`] on a hardware
//! adapter and [`SOFTWARE_BUDGET_CAP`] on a software one (whose "device" memory is the process's).

use crate::error::{Result, WgnnError};

/// Environment variable that sets the memory budget in bytes: `512M`, `2G`, `1500000` (suffixes
/// K, M, G are 2^10, 2^20, 2^30, in any case, an optional `B`/`iB` after them); it applies where
/// [`crate::GpuOptions::memory_budget`] is `None`.
pub const MEMORY_BUDGET_ENV: &str = "WGNN_MEMORY_BUDGET";

/// The default budget at most on a hardware adapter: 4 GiB, what the smallest current discrete
/// GPUs hold with room for the display and other programs.
pub const HARDWARE_BUDGET_CAP: u64 = 4 << 30;

/// The default budget at most on a software adapter (lavapipe): 1 GiB of host memory.
pub const SOFTWARE_BUDGET_CAP: u64 = 1 << 30;

/// The default budget: the adapter's `max_buffer_size`, capped by the kind of adapter.
pub(crate) fn default_memory_budget(limits: &wgpu::Limits, software: bool) -> u64 {
    let cap = if software { SOFTWARE_BUDGET_CAP } else { HARDWARE_BUDGET_CAP };
    limits.max_buffer_size.min(cap)
}

/// A byte count as text: digits with an optional K/M/G suffix (any case, `B` or `iB` after it
/// allowed), spaces around ignored; `None` for anything else, for 0 and for an overflow.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_lowercase();
    let unit = lower.strip_suffix("ib").or_else(|| lower.strip_suffix('b')).unwrap_or(&lower);
    let (digits, shift) = match unit.char_indices().last() {
        Some((at, 'k')) => (&unit[..at], 10),
        Some((at, 'm')) => (&unit[..at], 20),
        Some((at, 'g')) => (&unit[..at], 30),
        _ => (unit, 0),
    };
    let digits = digits.trim_end();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    value.checked_mul(1 << shift).filter(|&bytes| bytes > 0)
}

/// `$WGNN_MEMORY_BUDGET`'s value read: `None` when unset or empty, an error naming the variable
/// and its value when it is not a byte count [`parse_bytes`] reads.
pub(crate) fn memory_budget_from(value: Option<&str>) -> Result<Option<u64>> {
    let Some(text) = value.filter(|t| !t.trim().is_empty()) else { return Ok(None) };
    parse_bytes(text).map(Some).ok_or_else(|| {
        WgnnError::invalid(
            "environment",
            format!("{MEMORY_BUDGET_ENV}={text:?}: expected a positive byte count, e.g. 1500000, 512M or 2G"),
        )
    })
}

/// `$WGNN_MEMORY_BUDGET` as bytes (see [`memory_budget_from`]).
pub(crate) fn env_memory_budget() -> Result<Option<u64>> {
    let value = std::env::var_os(MEMORY_BUDGET_ENV);
    memory_budget_from(value.as_ref().map(|v| v.to_string_lossy()).as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_with_and_without_suffixes() {
        for (text, bytes) in [
            ("1500000", 1_500_000),
            (" 64k ", 64 << 10),
            ("64K", 64 << 10),
            ("512M", 512 << 20),
            ("512MiB", 512 << 20),
            ("2g", 2 << 30),
            ("2GB", 2 << 30),
            ("7b", 7),
        ] {
            assert_eq!(parse_bytes(text), Some(bytes), "{text:?}");
        }
        for bad in ["", "0", "0M", "M", "-1", "1.5G", "2T", "12 apples", "99999999999999999999", "17179869184G"] {
            assert_eq!(parse_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_bad_budget_is_an_error_naming_the_variable_and_an_empty_one_the_default() {
        assert_eq!(memory_budget_from(None).unwrap(), None);
        assert_eq!(memory_budget_from(Some("  ")).unwrap(), None);
        assert_eq!(memory_budget_from(Some("256M")).unwrap(), Some(256 << 20));
        let message = memory_budget_from(Some("lots")).unwrap_err().to_string();
        assert!(message.contains(MEMORY_BUDGET_ENV) && message.contains("lots"), "{message}");
    }

    #[test]
    fn the_default_is_the_largest_buffer_capped_by_the_kind_of_adapter() {
        let limits = |max_buffer_size| wgpu::Limits { max_buffer_size, ..Default::default() };
        assert_eq!(default_memory_budget(&limits(1 << 40), true), SOFTWARE_BUDGET_CAP);
        assert_eq!(default_memory_budget(&limits(1 << 40), false), HARDWARE_BUDGET_CAP);
        assert_eq!(default_memory_budget(&limits(256 << 20), false), 256 << 20);
    }
}
