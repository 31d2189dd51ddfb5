//! GPU tensors: a shape over a range of a wgpu storage buffer. f32 for values, u32 for labels and
//! indices. Upload from a slice, download to a `Vec` (the one readback path).

use std::num::NonZeroU64;
use std::sync::Arc;

use crate::device::memory::Allocation;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::host_memory::{checked_bytes, checked_product, count_text};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    U32,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U32 => "u32",
        }
    }
}

/// A row-major tensor living in a GPU buffer (possibly a slice of a larger one).
#[derive(Clone)]
pub struct Tensor {
    gpu: Gpu,
    buffer: Arc<wgpu::Buffer>,
    /// Byte offset of element 0 inside `buffer`; a multiple of the device's storage offset alignment.
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
    /// For u32 tensors uploaded from the host: the largest value, so kernels that take labels can
    /// reject one out of range without a readback.
    max_u32: Option<u32>,
    /// The engine's accounting of the buffer's bytes (shared by views and clones); none for a
    /// buffer the engine does not count (the device's zero buffer).
    _allocation: Option<Arc<Allocation>>,
}

/// Storage, copies, and uniform: a kernel may bind a small read-only window of a tensor's buffer as
/// a uniform buffer (lavapipe reads those ~10× faster; see dense_softmax_xent.wgsl).
const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::UNIFORM);

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        Self::alloc(gpu, shape, DType::F32, "zeros")
    }

    /// A u32 tensor of zeros (max value 0).
    pub fn zeros_u32(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let mut t = Self::alloc(gpu, shape, DType::U32, "zeros_u32")?;
        t.max_u32 = Some(0);
        Ok(t)
    }

    /// Uploads `data` (row-major, `shape.iter().product()` values).
    pub fn from_slice(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        check_len("upload", shape, data.len())?;
        let t = Self::alloc(gpu, shape, DType::F32, "upload")?;
        t.write(data)?;
        Ok(t)
    }

    /// Uploads u32 data (labels, indices, packed bytes).
    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        check_len("upload_u32", shape, data.len())?;
        let mut t = Self::alloc(gpu, shape, DType::U32, "upload_u32")?;
        t.write_u32(data)?;
        t.max_u32 = Some(data.iter().copied().max().unwrap_or(0));
        Ok(t)
    }

    fn alloc(gpu: &Gpu, shape: &[usize], dtype: DType, op: &str) -> Result<Tensor> {
        gpu.check_lost()?;
        let Some(bytes) = checked_product(shape).and_then(|len| checked_bytes(len, 4)) else {
            return Err(WgnnError::invalid(
                op,
                format!("a tensor of shape {shape:?} has more bytes than a u64 counts"),
            ));
        };
        let bytes = bytes.max(4);
        let limits = gpu.limits();
        if bytes > limits.max_buffer_size {
            return Err(WgnnError::DeviceLimit {
                op: op.into(),
                what: format!("a tensor of shape {shape:?}"),
                amount: bytes,
                unit: "bytes",
                limit: limits.max_buffer_size,
                limit_name: "max_buffer_size",
            });
        }
        if bytes > limits.max_storage_buffer_binding_size {
            return Err(WgnnError::DeviceLimit {
                op: op.into(),
                what: format!("a tensor of shape {shape:?}"),
                amount: bytes,
                unit: "bytes",
                limit: limits.max_storage_buffer_binding_size,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        let size = bytes.next_multiple_of(4);
        let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgnn tensor"),
            size,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer),
            offset: 0,
            shape: shape.to_vec(),
            dtype,
            max_u32: None,
            _allocation: Some(Arc::new(Allocation::new(gpu.memory_counter(), size))),
        })
    }

    /// An f32 tensor of `shape` over the start of `buffer`, shared with whoever else holds it (the
    /// device's zero buffer; the caller checks that `buffer` is large enough).
    pub(crate) fn on_buffer(gpu: &Gpu, buffer: Arc<wgpu::Buffer>, shape: &[usize]) -> Tensor {
        Tensor {
            gpu: gpu.clone(),
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            dtype: DType::F32,
            max_u32: None,
            _allocation: None,
        }
    }

    /// The buffer this tensor lies in.
    pub(crate) fn shared_buffer(&self) -> &Arc<wgpu::Buffer> {
        &self.buffer
    }

    /// A view of `shape` starting `offset_elems` elements into this tensor's storage. The byte
    /// offset must be a multiple of the device's `min_storage_buffer_offset_alignment`.
    pub fn view(&self, offset_elems: usize, shape: &[usize]) -> Result<Tensor> {
        let end = checked_product(shape).and_then(|len| len.checked_add(offset_elems));
        if end.is_none_or(|end| end > self.len()) {
            return Err(WgnnError::shape_of(
                "view",
                &[("tensor", &self.shape), ("view", shape)],
                format!("view of {shape:?} at element {offset_elems} exceeds tensor {:?}", self.shape),
            ));
        }
        let offset = self.offset + offset_elems as u64 * 4;
        let align = self.gpu.limits().min_storage_buffer_offset_alignment as u64;
        if !offset.is_multiple_of(align) {
            return Err(WgnnError::invalid("view", format!("byte offset {offset} is not a multiple of {align}")));
        }
        Ok(Tensor { offset, shape: shape.to_vec(), max_u32: self.max_u32, ..self.clone() })
    }

    /// The same storage from the same first element with a larger shape, reaching past this
    /// view into its buffer (whose extra elements the caller owns): a batch's rows padded up.
    pub(crate) fn extended(&self, shape: &[usize]) -> Result<Tensor> {
        let end = checked_product(shape)
            .filter(|&len| len >= self.len())
            .and_then(|len| checked_bytes(len, 4))
            .and_then(|bytes| bytes.checked_add(self.offset));
        if end.is_none_or(|end| end > self.buffer.size()) {
            return Err(WgnnError::shape_of(
                "extended",
                &[("tensor", &self.shape), ("extended", shape)],
                format!("{:?} from {:?}: past its buffer of {} bytes", shape, self.shape, self.buffer.size()),
            ));
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    /// The same storage with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if checked_product(shape) != Some(self.len()) {
            return Err(WgnnError::shape_of(
                "reshape",
                &[("tensor", &self.shape), ("reshape", shape)],
                format!("{:?} -> {shape:?}", self.shape),
            ));
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    /// Overwrites the contents from the host (queued; ordered before the next submit).
    pub fn write(&self, data: &[f32]) -> Result<()> {
        self.gpu.check_lost()?;
        self.expect_dtype("write", DType::F32)?;
        check_len("write", &self.shape, data.len())?;
        if !data.is_empty() {
            self.gpu.queue().write_buffer(&self.buffer, self.offset, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Overwrites u32 contents from the host. The known maximum (see [`Tensor::max_u32`]) is
    /// kept only by the tensor created with [`Tensor::from_u32`]; a write through a clone or view
    /// does not change it, so label tensors should be created, not rewritten.
    pub fn write_u32(&self, data: &[u32]) -> Result<()> {
        self.gpu.check_lost()?;
        self.expect_dtype("write_u32", DType::U32)?;
        check_len("write_u32", &self.shape, data.len())?;
        if !data.is_empty() {
            self.gpu.queue().write_buffer(&self.buffer, self.offset, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Copies `src` into this tensor on the device (queued after all earlier work; no readback).
    /// Both must have the same dtype and element count.
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        const OP: &str = "copy";
        if src.dtype != self.dtype || src.len() != self.len() {
            return Err(WgnnError::shape_of(
                OP,
                &[("source", &src.shape), ("destination", &self.shape)],
                format!(
                    "source {} {:?} vs destination {} {:?}",
                    src.dtype.name(),
                    src.shape,
                    self.dtype.name(),
                    self.shape
                ),
            ));
        }
        if self.is_empty() {
            return Ok(());
        }
        let mut encoder =
            self.gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgnn copy") });
        encoder.copy_buffer_to_buffer(&src.buffer, src.offset, &self.buffer, self.offset, self.len() as u64 * 4);
        self.gpu.submit(OP, encoder.finish())?;
        Ok(())
    }

    /// Downloads an f32 tensor (waits for all submitted work).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.expect_dtype("download", DType::F32)?;
        let bytes = self.gpu.read_bytes(&self.buffer, self.offset, self.len() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Downloads `len` values of an f32 tensor from value `first` on (a row of a batch's
    /// outputs, without the alignment a view's offset needs).
    pub(crate) fn range_to_vec(&self, first: usize, len: usize) -> Result<Vec<f32>> {
        self.expect_dtype("download", DType::F32)?;
        if first.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(WgnnError::shape_of(
                "download",
                &[("tensor", &self.shape)],
                format!("values {first}..{} past the tensor's {}", first.saturating_add(len), self.len()),
            ));
        }
        let bytes = self.gpu.read_bytes(&self.buffer, self.offset + first as u64 * 4, len as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Downloads a u32 tensor.
    pub fn to_vec_u32(&self) -> Result<Vec<u32>> {
        self.expect_dtype("download_u32", DType::U32)?;
        let bytes = self.gpu.read_bytes(&self.buffer, self.offset, self.len() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    /// The largest value of a u32 tensor uploaded from the host, if known.
    pub fn max_u32(&self) -> Option<u32> {
        self.max_u32
    }
    pub(crate) fn set_max_u32(&mut self, max: Option<u32>) {
        self.max_u32 = max;
    }
    /// Rows and columns of a rank-2 tensor.
    pub fn dims2(&self, op: &str) -> Result<(usize, usize)> {
        match self.shape[..] {
            [r, c] => Ok((r, c)),
            _ => Err(WgnnError::shape_of(
                op,
                &[("tensor", &self.shape)],
                format!("expected a matrix, got shape {:?}", self.shape),
            )),
        }
    }

    pub(crate) fn expect_dtype(&self, op: &str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(WgnnError::DType {
                op: op.into(),
                expected: dtype.name(),
                got: self.dtype.name(),
                shape: self.shape.clone(),
            });
        }
        Ok(())
    }

    /// An error naming `op` if any dimension is zero.
    pub(crate) fn expect_nonempty(&self, op: &str) -> Result<()> {
        if self.is_empty() {
            return Err(WgnnError::EmptyTensor { op: op.into(), shape: self.shape.clone() });
        }
        Ok(())
    }

    /// Byte offset of element 0 inside the buffer (kernels with vec4 loads need it 16-aligned).
    pub(crate) fn byte_offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: NonZeroU64::new((self.len() as u64 * 4).max(4)),
        })
    }

    /// True if both tensors are views of one buffer.
    pub(crate) fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buffer, &other.buffer)
    }

    /// Bytes of the buffer from this view's start to the buffer's end.
    pub(crate) fn bytes_to_buffer_end(&self) -> u64 {
        self.buffer.size() - self.offset
    }

    /// True if both tensors share storage bytes (a kernel may not read and write the same memory
    /// through two bindings).
    pub(crate) fn overlaps(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buffer, &other.buffer)
            && self.offset < other.offset + other.len() as u64 * 4
            && other.offset < self.offset + self.len() as u64 * 4
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({}, {:?})", self.dtype.name(), self.shape)
    }
}

fn check_len(op: &str, shape: &[usize], len: usize) -> Result<()> {
    let want = checked_product(shape);
    if want != Some(len) {
        return Err(WgnnError::shape_of(
            op,
            &[("shape", shape), ("data", &[len])],
            format!("shape {shape:?} needs {} values, got {len}", count_text(want)),
        ));
    }
    Ok(())
}
