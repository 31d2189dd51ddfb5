//! The one way every boolean `WGNN_*` environment variable is read (`WGNN_REQUIRE_GPU`,
//! `WGNN_AUTOTUNE`): `1`, `true`, `yes`, `on` for true and `0`, `false`, `no`, `off` for false,
//! in any case; unset or empty is the default; anything else is an error naming the variable.

use crate::error::{Result, WgnnError};

/// A boolean's text: `Some(true)` for 1/true/yes/on, `Some(false)` for 0/false/no/off (any
/// case, spaces around ignored), `None` for anything else.
pub fn parse_switch(value: &str) -> Option<bool> {
    match value.trim().to_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The environment variable `name` as a boolean: `None` when unset or empty, an error naming it
/// and its value when it is not one of the words [`parse_switch`] reads.
pub fn env_switch(name: &str) -> Result<Option<bool>> {
    let Some(value) = std::env::var_os(name) else { return Ok(None) };
    let text = value.to_string_lossy();
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_switch(&text).map(Some).ok_or_else(|| {
        WgnnError::invalid(
            "environment",
            format!("{name}={text:?}: expected 1, true, yes or on, or 0, false, no or off"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_reads_the_same_words_for_every_variable() {
        for on in ["1", "true", "TRUE", " yes ", "on", "On"] {
            assert_eq!(parse_switch(on), Some(true), "{on:?}");
        }
        for off in ["0", "false", "False", "no", " OFF "] {
            assert_eq!(parse_switch(off), Some(false), "{off:?}");
        }
        for bad in ["", "2", "sometimes", "y", "enable"] {
            assert_eq!(parse_switch(bad), None, "{bad:?}");
        }
    }
}
