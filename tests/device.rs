//! Device-level errors: an adapter name that matches none, a tensor past the device's limits.

mod common;
use common::*;
use wgnn::{Gpu, Tensor, WgnnError, INSTALL_HINT};

#[test]
fn an_adapter_that_is_not_there_is_an_error_listing_those_present() {
    let present = gpu().adapter_info().name.clone();
    let err = Gpu::with_adapter(Some("no-such-adapter-3f9c")).expect_err("no adapter has that name");
    assert!(matches!(err, WgnnError::AdapterNotFound { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("no-such-adapter-3f9c"), "{message}");
    // The message lists the adapters that are present, so a typo is easy to see; with a driver
    // there, installing one is not the fix.
    assert!(message.contains(&present), "{message}");
    assert!(!message.contains(INSTALL_HINT), "{message}");
}

#[test]
fn the_chosen_adapter_describes_itself() {
    let gpu = gpu();
    let described = gpu.describe();
    assert!(described.contains(&gpu.adapter_info().name) && described.contains("driver"), "{described}");
    // Picking the same adapter by (part of) its name works.
    let name = gpu.adapter_info().name.clone();
    let again = Gpu::with_adapter(Some(&name[..name.len().min(6)])).unwrap();
    assert_eq!(again.adapter_info().name, name);
}

#[test]
fn a_tensor_past_the_binding_limit_is_an_error_naming_the_limit() {
    let gpu = gpu();
    let limit = gpu.limits().max_storage_buffer_binding_size as usize;
    // Checked before anything is allocated.
    let err = Tensor::zeros(&gpu, &[limit / 4 + 1]).expect_err("one float past the limit");
    assert!(matches!(err, WgnnError::DeviceLimit { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("max_storage_buffer_binding_size") || message.contains("max_buffer_size"), "{message}");
    assert!(message.contains(&(limit / 4 + 1).to_string()), "the shape is named: {message}");
}
