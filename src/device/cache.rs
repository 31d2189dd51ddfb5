//! The device's store of compiled shader objects, which lives as long as the device:
//! one shader module and layout per kernel family, one pipeline per specialisation, and a small
//! zero buffer. Only storage: [`crate::registry`] fills it and builds dispatches from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Everything that makes one pipeline different from another.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub family: &'static str,
    pub entry: &'static str,
    /// Override constants as (name, f64 bits), sorted by name.
    pub constants: Vec<(&'static str, u64)>,
}

/// One kernel family's shader module and layouts.
pub(crate) struct FamilyObjects {
    pub module: wgpu::ShaderModule,
    pub bind_group_layout: wgpu::BindGroupLayout,
    pub pipeline_layout: wgpu::PipelineLayout,
}

/// One specialisation's pipeline, with the layout its bind groups are made for.
pub(crate) struct CachedPipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group_layout: wgpu::BindGroupLayout,
    /// Set once a dispatch of it has been recorded ([`crate::plan::Dispatch::pipeline_ran`]).
    pub ran: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Shader modules, layouts and pipelines, each created once per device.
#[derive(Default)]
pub(crate) struct PipelineCache {
    pub families: Mutex<HashMap<&'static str, Arc<FamilyObjects>>>,
    pub pipelines: Mutex<HashMap<PipelineKey, Arc<CachedPipeline>>>,
    /// A 16-byte zero buffer bound where a specialisation does not read a binding.
    pub dummy: Mutex<Option<Arc<wgpu::Buffer>>>,
}

impl PipelineCache {
    /// Number of pipelines built so far (for tests of the cache).
    pub(crate) fn len(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }
}
