//! The device: an adapter name that matches none, a tensor past the device's limits, the device
//! profile and its overrides.

mod common;
use common::*;
use wgnn::internals::kernels::matmul::{choose_variant, MatmulVariant};
use wgnn::profile::Policy;
use wgnn::{Gpu, GpuOptions, ProfileOverride, Tensor, WgnnError, INSTALL_HINT};

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

/// A device on the default adapter with the given profile override.
fn device_with(profile: ProfileOverride) -> Gpu {
    Gpu::with_options(&GpuOptions { profile, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

#[test]
fn the_profile_follows_the_adapter_unless_overridden() {
    let adapter = device_with(ProfileOverride::Adapter);
    let profile = adapter.profile();
    let cpu_adapter = adapter.adapter_info().device_type == wgpu::DeviceType::Cpu;
    assert_eq!(profile.policy == Policy::CpuAdapter, cpu_adapter, "{profile:?}");
    assert!(!profile.overridden && !adapter.describe().contains("forced"), "{}", adapter.describe());

    let forced_gpu = device_with(ProfileOverride::Gpu);
    let forced_cpu = device_with(ProfileOverride::CpuAdapter);
    let (g, c) = (forced_gpu.profile(), forced_cpu.profile());
    assert_eq!((g.policy, c.policy), (Policy::Gpu, Policy::CpuAdapter));
    assert_eq!((g.overridden, c.overridden), (cpu_adapter, !cpu_adapter));
    let forced = if cpu_adapter { &forced_gpu } else { &forced_cpu };
    assert!(forced.describe().contains("(forced)"), "{}", forced.describe());

    // The policies differ as documented...
    assert_eq!((c.fused_output_max_rows, g.fused_output_max_rows), (64, 256));
    assert!(c.matmul.prefer_subgroup && !g.matmul.prefer_subgroup);
    assert_eq!((c.matmul.register_workgroup, g.matmul.register_workgroup), ([16, 1], [16, 4]));
    assert_eq!((c.matmul.lanes_m_max_n, g.matmul.lanes_m_max_n), (Some(16), None));
    assert_eq!(g.matmul.split_k_target_groups, 256);
    assert_eq!(c.first_layer_in_place, c.matmul.subgroup_kernel);
    assert!(!g.first_layer_in_place);
    // ... and what the hardware imposes does not.
    for p in [g, c] {
        assert_eq!(p.matmul.subgroup_kernel, profile.matmul.subgroup_kernel);
        assert_eq!(p.subgroup_sizes, profile.subgroup_sizes);
        assert_eq!(
            (p.loop_cap, p.device_type, p.timestamps),
            (profile.loop_cap, profile.device_type, profile.timestamps)
        );
    }
    assert_eq!(profile.matmul.subgroup_kernel, profile.subgroup_sizes.is_some_and(|(min, _)| min >= 8));

    // The engine's matmul picks follow the policy.
    assert_eq!(choose_variant(&forced_gpu, 256, 256, 256, false, false), MatmulVariant::Tiled);
    assert_eq!(choose_variant(&forced_gpu, 32, 64, 784, false, false), MatmulVariant::Register);
    assert_eq!(choose_variant(&forced_gpu, 32, 10, 64, false, false), MatmulVariant::Register);
    let sub_or_register = if c.matmul.subgroup_kernel { MatmulVariant::Subgroup } else { MatmulVariant::Register };
    assert_eq!(choose_variant(&forced_cpu, 256, 256, 256, false, false), sub_or_register);
    assert_eq!(choose_variant(&forced_cpu, 32, 10, 64, false, false), MatmulVariant::RegisterTall);
    // A ragged product: the subgroup kernel by scalars where it runs.
    assert_eq!(choose_variant(&forced_cpu, 32, 66, 63, false, false), sub_or_register);
    assert_eq!(choose_variant(&forced_gpu, 32, 66, 63, false, false), MatmulVariant::Register);
}

#[test]
fn profile_overrides_parse_from_their_names() {
    for (name, want) in [
        ("", Some(ProfileOverride::Adapter)),
        ("adapter", Some(ProfileOverride::Adapter)),
        (" GPU ", Some(ProfileOverride::Gpu)),
        ("cpu", Some(ProfileOverride::CpuAdapter)),
        ("tpu", None),
    ] {
        assert_eq!(ProfileOverride::parse(name), want, "{name:?}");
    }
}

#[test]
fn require_gpu_refuses_a_software_adapter_only() {
    let adapter = gpu();
    let name = adapter.adapter_info().name.clone();
    let required =
        Gpu::with_options(&wgnn::GpuOptions { adapter: Some(&name), require_gpu: true, ..Default::default() });
    match (adapter.is_cpu_adapter(), required) {
        (true, Err(WgnnError::SoftwareAdapter { adapter })) => assert_eq!(adapter, name),
        (true, other) => panic!("a software adapter with require_gpu: {:?}", other.map(|g| g.describe())),
        (false, Ok(g)) => assert!(g.software_notice().is_none()),
        (false, Err(e)) => panic!("a GPU refused: {e}"),
    }
    assert_eq!(adapter.software_notice().is_some(), adapter.is_cpu_adapter());
}
