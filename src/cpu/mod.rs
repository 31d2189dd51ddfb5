//! The CPU reference path: plain Rust for every kernel, named and ordered like the shaders
//! (`shaders/<family>.wgsl` ↔ `src/kernels/<family>.rs` ↔ `src/cpu/<family>.rs`). Row-major
//! slices, shapes passed explicitly. Clarity over speed: these define what the kernels compute.

pub mod bias_act;
pub mod matmul;
pub mod reduce;

pub use bias_act::{bias_act_backward, bias_act_forward};
pub use matmul::matmul;
pub use reduce::column_sum;
