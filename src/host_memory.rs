//! How much memory this process may still take from the host, so that a size read from a file, a
//! flag or an API call is refused with an error before it is allocated, instead of the allocator
//! aborting the process: the smaller of the machine's available memory (`MemAvailable`) and what
//! the process's address-space limit (`ulimit -v`) leaves. Where neither is known (not Linux),
//! nothing is refused here; the sizes are still checked for overflow.

use crate::error::{Result, WgnnError};

/// Bytes this process may still allocate, where the host says.
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let machine = meminfo.as_deref().and_then(|t| kib_field(t, "MemAvailable:"));
    [machine, address_space_left()].into_iter().flatten().min()
}

/// What `RLIMIT_AS` leaves beyond the address space already mapped.
fn address_space_left() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max address space"))?;
    let limit: u64 = line.split_whitespace().nth(3)?.parse().ok()?; // "unlimited" does not parse
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let used = kib_field(&status, "VmSize:")?;
    Some(limit.saturating_sub(used))
}

/// A `Name:   1234 kB` field of a /proc file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Checks that `bytes` more of host memory (for `what`, in `op`) can be had; an error naming both
/// and the figures otherwise.
pub fn check(op: &str, what: impl FnOnce() -> String, bytes: u64) -> Result<()> {
    match available_bytes() {
        Some(available) if bytes > available => {
            Err(WgnnError::HostMemory { op: op.to_string(), what: what(), bytes, available })
        }
        _ => Ok(()),
    }
}

/// As [`check`], for a size that may have overflowed in the counting (`None`): refused too, as
/// more bytes than a `u64` counts, which no host holds.
pub fn check_counted(op: &str, what: impl FnOnce() -> String, bytes: Option<u64>) -> Result<()> {
    match bytes {
        Some(bytes) => check(op, what, bytes),
        None => Err(WgnnError::invalid(op, format!("{} needs more bytes of host memory than a u64 counts", what()))),
    }
}

/// The product of `dims`, or `None` where it does not fit a `usize`.
pub fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// A count for a message: the number, or, where it overflowed, that it is more than a `usize`
/// counts (never the number it would have wrapped to).
pub fn count_text(count: Option<usize>) -> String {
    count.map_or_else(|| "more than a usize counts".to_string(), |n| n.to_string())
}

/// Bytes of `count` values of `size` bytes each, or `None` past `u64`.
pub fn checked_bytes(count: usize, size: usize) -> Option<u64> {
    (count as u64).checked_mul(size as u64)
}
