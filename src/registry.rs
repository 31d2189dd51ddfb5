//! The kernel registry: kernel families and the pipelines built from them, and the one place a
//! [`Dispatch`] is made.
//!
//! Each kernel family is one `shaders/<family>.wgsl` file, pulled in with `include_str!` and
//! described by a [`KernelFamily`]: binding 0 is a uniform of sizes, bindings 1.. are storage
//! buffers. Pipelines are built once per (family, entry point, override constants) and cached in
//! the device's store; shapes travel in the uniform, so one pipeline serves every size. With
//! `WGNN_DUMP_WGSL=DIR` each new pipeline is also written out ([`crate::wgsl_dump`]).

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use crate::device::cache::{CachedPipeline, FamilyObjects, PipelineKey};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Dispatch;
use crate::tensor::Tensor;
use crate::wgsl_dump::{dump_dir, dump_to, PipelineSource};

/// How a binding is used by the shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
    /// A read-only window bound as a uniform buffer: as many bytes as the shader declares.
    Uniform,
}

/// One `.wgsl` file: its name, source (after any shared snippets it needs) and storage bindings
/// (1..=n, after the uniform at 0).
pub struct KernelFamily {
    pub name: &'static str,
    pub sources: &'static [&'static str],
    pub storage: &'static [Access],
}

/// A value for a WGSL `override` constant.
pub type Constant = (&'static str, f64);

fn family_objects(gpu: &Gpu, family: &'static KernelFamily) -> Result<Arc<FamilyObjects>> {
    let cache = gpu.pipelines();
    if let Some(found) = lock(&cache.families)?.get(family.name) {
        return Ok(found.clone());
    }
    let device = gpu.device();
    let objects = gpu
        .scoped(family.name, || {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family.name),
                source: wgpu::ShaderSource::Wgsl(family.sources.concat().into()),
            });
            let mut entries = vec![wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }];
            for (i, access) in family.storage.iter().enumerate() {
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: i as u32 + 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match access {
                            Access::Uniform => wgpu::BufferBindingType::Uniform,
                            _ => wgpu::BufferBindingType::Storage { read_only: *access == Access::Read },
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                });
            }
            let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(family.name),
                entries: &entries,
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(family.name),
                bind_group_layouts: &[Some(&bind_group_layout)],
                immediate_size: 0,
            });
            FamilyObjects { module, bind_group_layout, pipeline_layout }
        })
        .map_err(|e| WgnnError::KernelCreation { kernel: family.name.into(), message: e.to_string() })?;
    let objects = Arc::new(objects);
    lock(&cache.families)?.insert(family.name, objects.clone());
    Ok(objects)
}

fn pipeline(
    gpu: &Gpu,
    family: &'static KernelFamily,
    entry: &'static str,
    constants: &[Constant],
) -> Result<Arc<CachedPipeline>> {
    let mut key_constants: Vec<(&'static str, u64)> = constants.iter().map(|(n, v)| (*n, v.to_bits())).collect();
    key_constants.sort();
    let key = PipelineKey { family: family.name, entry, constants: key_constants };
    if let Some(found) = lock(&gpu.pipelines().pipelines)?.get(&key) {
        return Ok(found.clone());
    }
    if COMPILING.get() != Compiling::Allowed {
        COMPILING.set(Compiling::Refusing);
        return Err(WgnnError::invalid(family.name, "a new pipeline was needed where none may be built"));
    }
    // Before building: a pipeline naga refuses is dumped too, for the other compilers to judge.
    if let Some(dir) = dump_dir() {
        let bindings: Vec<&str> = std::iter::once("uniform")
            .chain(family.storage.iter().map(|access| match access {
                Access::Read => "read-only-storage",
                Access::ReadWrite => "storage",
                Access::Uniform => "uniform",
            }))
            .collect();
        let source =
            PipelineSource { family: family.name, entry, sources: family.sources, constants, bindings: &bindings };
        dump_to(dir, &source)?;
    }
    let objects = family_objects(gpu, family)?;
    let kernel_name = format!("{}::{entry}", family.name);
    let pipeline = gpu
        .scoped(&kernel_name, || {
            gpu.device().create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&kernel_name),
                layout: Some(&objects.pipeline_layout),
                module: &objects.module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        })
        .map_err(|e| WgnnError::KernelCreation { kernel: kernel_name.clone(), message: e.to_string() })?;
    let bind_group_layout = objects.bind_group_layout.clone();
    let cached = Arc::new(CachedPipeline { pipeline, bind_group_layout, ran: Arc::default() });
    lock(&gpu.pipelines().pipelines)?.insert(key, cached.clone());
    Ok(cached)
}

/// Whether this thread may build pipelines: [`without_compiling`] refuses (the autotuner, past
/// its budget, times only what is built already).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compiling {
    Allowed,
    Refused,
    /// Refused, and a pipeline was asked for.
    Refusing,
}

thread_local! {
    static COMPILING: Cell<Compiling> = const { Cell::new(Compiling::Allowed) };
}

/// Runs `build` (which plans kernels) with pipeline building refused on this thread: `None`
/// where it needed a pipeline that is not built yet (nothing is compiled), else its result.
pub(crate) fn without_compiling<T>(build: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
    /// Puts the thread's state back, on a panic too.
    struct Restore(Compiling);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPILING.set(self.0);
        }
    }
    let restore = Restore(COMPILING.replace(Compiling::Refused));
    let result = build();
    let refused = COMPILING.get() == Compiling::Refusing;
    drop(restore);
    match refused {
        true => Ok(None),
        false => result.map(Some),
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| WgnnError::Gpu { op: "pipeline cache".into(), message: "lock poisoned".into() })
}

/// A small zero buffer to bind where a specialisation ignores a binding: one per device.
pub(crate) fn dummy(gpu: &Gpu) -> Result<Tensor> {
    let mut slot = lock(&gpu.pipelines().dummy)?;
    if let Some(buffer) = slot.as_ref() {
        return Ok(Tensor::on_buffer(gpu, buffer.clone(), &[4]));
    }
    let t = Tensor::zeros(gpu, &[4])?;
    *slot = Some(t.shared_buffer().clone());
    Ok(t)
}

/// Builds a dispatch: `params` fills the uniform at binding 0, `tensors` bindings 1.. in order.
pub(crate) fn dispatch<P: bytemuck::Pod>(
    gpu: &Gpu,
    family: &'static KernelFamily,
    entry: &'static str,
    constants: &[Constant],
    params: &P,
    tensors: &[&Tensor],
    workgroups: [u32; 3],
) -> Result<Dispatch> {
    let label = format!("{}::{entry}", family.name);
    if tensors.len() != family.storage.len() {
        return Err(WgnnError::invalid(
            &label,
            format!("{} bindings given, {} expected", tensors.len(), family.storage.len()),
        ));
    }
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    if workgroups.iter().any(|&w| w > max) {
        return Err(WgnnError::DeviceLimit {
            op: label,
            what: format!("a grid of {workgroups:?} workgroups, one dimension"),
            amount: workgroups.iter().copied().max().unwrap_or(0) as u64,
            unit: "workgroups",
            limit: max as u64,
            limit_name: "max_compute_workgroups_per_dimension",
        });
    }
    gpu.check_lost()?;
    let cached = pipeline(gpu, family, entry, constants)?;
    let device = gpu.device();
    // Not `create_buffer_init`: it panics when the device is lost; a queued write (done before
    // the next submit, so before any dispatch reads it) reports through the error scopes.
    let contents = bytemuck::bytes_of(params);
    let uniform = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(&label),
        size: (contents.len() as u64).next_multiple_of(4).max(4),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue().write_buffer(&uniform, 0, contents);
    let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
    for (i, t) in tensors.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: t.binding() });
    }
    let bind_group = gpu.scoped(&label, || {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &cached.bind_group_layout,
            entries: &entries,
        })
    })?;
    let buffers = tensors.iter().map(|t| t.shared_buffer().clone()).collect();
    let (pipeline, pipeline_ran) = (cached.pipeline.clone(), cached.ran.clone());
    Ok(Dispatch { label, pipeline, bind_group, workgroups, buffers, pipeline_ran })
}

/// Workgroups for `items` invocations of `workgroup_size` in a 1-D kernel, folded into y when x
/// would pass the per-dimension limit. Kernels rebuild the index as `(wid.y * nwg.x + wid.x) *
/// WG + lid.x` (the invocation; ×PER_LANE where each does several items) and return when it is
/// past the end.
pub(crate) fn grid_1d(gpu: &Gpu, items: usize, workgroup_size: u32) -> [u32; 3] {
    let groups = items.div_ceil(workgroup_size as usize).max(1) as u64;
    let max = gpu.limits().max_compute_workgroups_per_dimension as u64;
    if groups <= max {
        [groups as u32, 1, 1]
    } else {
        [max as u32, groups.div_ceil(max) as u32, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compile_guard_is_put_back_after_a_panic_and_nests() {
        let caught = std::panic::catch_unwind(|| without_compiling(|| -> Result<()> { panic!("while planning") }));
        assert!(caught.is_err());
        assert!(COMPILING.get() == Compiling::Allowed, "a panic left pipeline building refused");
        let outer = without_compiling(|| {
            let inner = without_compiling(|| Ok(1));
            assert!(COMPILING.get() == Compiling::Refused, "the inner scope gave the outer one back");
            inner
        });
        assert!(matches!(outer, Ok(Some(Some(1)))));
        assert!(COMPILING.get() == Compiling::Allowed);
    }
}
