//! Devices on several adapters at once, for data-parallel training in one process
//! ([`crate::model::fit_on_adapters`]): which adapters are present, and devices on all of them
//! or on a list, as a program's `--adapters` flag names them.

use super::{quiet_mesa, Gpu, GpuOptions};
use crate::error::{Result, WgnnError};

const OP: &str = "Gpu::open_adapters";

/// Every adapter wgpu finds on the primary backends (Vulkan, Metal, DX12), in its order: the
/// order [`Gpu::adapter_names`] lists and indices in [`Gpu::open_adapters`] count. Each call
/// makes a fresh instance, so that each device opened gets its own `Adapter` object.
fn enumerate() -> Vec<wgpu::Adapter> {
    quiet_mesa::quiet_mesa_if_single_threaded();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    let instance = wgpu::Instance::new(desc);
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
}

/// A GPU (not a CPU renderer such as lavapipe).
fn is_hardware(info: &wgpu::AdapterInfo) -> bool {
    info.device_type != wgpu::DeviceType::Cpu
}

/// The indices "all" opens: every hardware adapter of one backend — the first of Vulkan, Metal,
/// DX12 that has one, so that a GPU two APIs reach (Vulkan and DX12 on Windows) counts once —
/// or, where no backend has a GPU, the software adapters of the first backend that has any.
fn all_indices(infos: &[wgpu::AdapterInfo]) -> Vec<usize> {
    let order = [wgpu::Backend::Vulkan, wgpu::Backend::Metal, wgpu::Backend::Dx12];
    let of = |backend: wgpu::Backend, hardware: bool| -> Vec<usize> {
        (0..infos.len()).filter(|&i| infos[i].backend == backend && (!hardware || is_hardware(&infos[i]))).collect()
    };
    let with_gpu = order.iter().map(|&b| of(b, true)).find(|found| !found.is_empty());
    let any = || order.iter().map(|&b| of(b, false)).find(|found| !found.is_empty());
    with_gpu.or_else(any).unwrap_or_else(|| (0..infos.len()).collect())
}

/// The adapter indices `spec` names (see [`Gpu::open_adapters`]), checked against `infos`.
fn resolve(spec: &str, infos: &[wgpu::AdapterInfo]) -> Result<Vec<usize>> {
    let names: Vec<String> = infos.iter().map(describe).collect();
    if infos.is_empty() {
        return Err(WgnnError::NoAdapter { detail: format!(" (looking for adapters {spec:?})") });
    }
    if spec.trim().eq_ignore_ascii_case("all") {
        return Ok(all_indices(infos));
    }
    // Names match the adapters "all" would open first, so that a name does not pick the same GPU
    // through a second API.
    let preferred = all_indices(infos);
    let search: Vec<usize> =
        preferred.iter().copied().chain((0..infos.len()).filter(|i| !preferred.contains(i))).collect();
    let mut picked = Vec::new();
    for entry in spec.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "{spec:?} has an empty entry: give \"all\" or a comma-separated list of adapter names or indices"
                ),
            ));
        }
        if let Ok(index) = entry.parse::<usize>() {
            if index >= infos.len() {
                return Err(WgnnError::invalid(
                    OP,
                    format!(
                        "adapter index {index}, but {} present: {}",
                        match infos.len() {
                            1 => "1 adapter is".to_string(),
                            n => format!("{n} adapters are"),
                        },
                        numbered(&names)
                    ),
                ));
            }
            picked.push(index);
            continue;
        }
        let lower = entry.to_lowercase();
        let matching: Vec<usize> =
            search.iter().copied().filter(|&i| infos[i].name.to_lowercase().contains(&lower)).collect();
        if matching.is_empty() {
            return Err(WgnnError::AdapterNotFound { wanted: entry.to_string(), present: names });
        }
        // The same name again takes the next adapter it matches: "nvidia,nvidia" opens two GPUs.
        match matching.into_iter().find(|i| !picked.contains(i)) {
            Some(index) => picked.push(index),
            None => {
                return Err(WgnnError::invalid(
                    OP,
                    format!(
                        "{entry:?} names more adapters than match it (adapters present: {}); to open several devices \
                         on one adapter, repeat its index",
                        numbered(&names)
                    ),
                ))
            }
        }
    }
    Ok(picked)
}

/// "name (backend, type)".
fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

fn numbered(names: &[String]) -> String {
    names.iter().enumerate().map(|(i, n)| format!("{i}: {n}")).collect::<Vec<_>>().join(", ")
}

impl Gpu {
    /// Every adapter present, "name (backend, type)", in the order the indices of
    /// [`Gpu::open_adapters`] count (a program's `--list-adapters` prints them).
    pub fn adapter_names() -> Vec<String> {
        enumerate().iter().map(|a| describe(&a.get_info())).collect()
    }

    /// A device on each adapter `spec` names, as a program's `--adapters` flag takes it, for
    /// [`crate::model::fit_on_adapters`]:
    /// - `"all"`: every GPU of one backend (the first of Vulkan, Metal, DX12 that has one, so a
    ///   GPU that two APIs reach counts once); where there is no GPU, the software adapters
    ///   (lavapipe: one device).
    /// - a comma-separated list, each entry an index into [`Gpu::adapter_names`] or a part of an
    ///   adapter's name (case-insensitive; a part without commas, which separate the entries:
    ///   "llvmpipe" for "llvmpipe (LLVM 15.0.6, 256 bits)"). A name that matches several adapters takes the next
    ///   one not yet opened ("nvidia,nvidia": two NVIDIA GPUs); an index may repeat ("0,0": two
    ///   devices on adapter 0, to try data-parallel training on a machine with one GPU).
    ///
    /// `options` applies to every device (its `adapter` is ignored). Errors: no adapter at all
    /// ([`WgnnError::NoAdapter`], with the install hint), a name that matches none
    /// ([`WgnnError::AdapterNotFound`], listing those present), an index out of range, an empty
    /// entry, or a device that cannot be created.
    pub fn open_adapters(spec: &str, options: &GpuOptions) -> Result<Vec<Gpu>> {
        let infos: Vec<wgpu::AdapterInfo> = enumerate().iter().map(|a| a.get_info()).collect();
        let mut gpus = Vec::new();
        for index in resolve(spec, &infos)? {
            let adapter = enumerate().into_iter().nth(index).ok_or_else(|| {
                WgnnError::invalid(OP, format!("adapter {index} ({}) went away while opening", describe(&infos[index])))
            })?;
            gpus.push(pollster::block_on(Gpu::open(adapter, options))?);
        }
        Ok(gpus)
    }

    /// Whether `self` and `other` are the same device (clones of one `Gpu`).
    pub fn same_device(&self, other: &Gpu) -> bool {
        std::sync::Arc::ptr_eq(&self.inner, &other.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, backend: wgpu::Backend, device_type: wgpu::DeviceType) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo { name: name.to_string(), ..wgpu::AdapterInfo::new(device_type, backend) }
    }

    /// Windows with two NVIDIA GPUs, each reached through DX12 and Vulkan, and WARP.
    fn windows() -> Vec<wgpu::AdapterInfo> {
        use wgpu::{Backend::*, DeviceType::*};
        vec![
            info("NVIDIA A100", Dx12, DiscreteGpu),
            info("NVIDIA A100", Dx12, DiscreteGpu),
            info("Microsoft Basic Render Driver", Dx12, Cpu),
            info("NVIDIA A100", Vulkan, DiscreteGpu),
            info("NVIDIA A100", Vulkan, DiscreteGpu),
        ]
    }

    #[test]
    fn all_is_every_gpu_of_one_backend_or_else_the_software_ones() {
        assert_eq!(resolve("all", &windows()).unwrap(), vec![3, 4]);
        assert_eq!(resolve(" ALL ", &windows()).unwrap(), vec![3, 4]);
        let lavapipe = [info("llvmpipe (LLVM 15.0.6, 256 bits)", wgpu::Backend::Vulkan, wgpu::DeviceType::Cpu)];
        assert_eq!(resolve("all", &lavapipe).unwrap(), vec![0]);
    }

    #[test]
    fn names_take_the_next_matching_adapter_and_indices_may_repeat() {
        assert_eq!(resolve("nvidia,nvidia", &windows()).unwrap(), vec![3, 4]);
        assert_eq!(resolve("a100, 0 ,0", &windows()).unwrap(), vec![3, 0, 0]);
        assert_eq!(resolve("basic", &windows()).unwrap(), vec![2]);
        let err = |spec: &str| format!("{:?}", resolve(spec, &windows()).unwrap_err());
        assert!(err("nvidia,nvidia,nvidia,nvidia,nvidia").contains("more adapters than match"));
        assert!(err("amd").contains("no adapter whose name contains \"amd\""), "{}", err("amd"));
        assert!(err("5").contains("adapter index 5, but 5 adapters are present"), "{}", err("5"));
        let lavapipe = [info("llvmpipe (LLVM 15.0.6, 256 bits)", wgpu::Backend::Vulkan, wgpu::DeviceType::Cpu)];
        let one = format!("{:?}", resolve("1", &lavapipe).unwrap_err());
        assert!(one.contains("adapter index 1, but 1 adapter is present"), "{one}");
        assert!(err("0,,1").contains("empty entry"), "{}", err("0,,1"));
        assert!(err("").contains("empty entry"), "{}", err(""));
        assert!(format!("{:?}", resolve("all", &[]).unwrap_err()).contains("no GPU adapter found"));
    }
}
