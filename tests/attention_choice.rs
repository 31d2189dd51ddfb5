//! The pick between the clear and flash attention kernels, and AttentionBuffers running either
//! against the CPU reference; the clear kernels' scores past the binding limit as an error.

mod common;
use common::loss_outputs::expect_err;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::attention_choice::{choose_attention_kernel, AttentionBuffers, AttentionKernel};
use wgnn::internals::kernels::attention_dims::AttentionDims;
use wgnn::internals::kernels::flash_attention::flash_attention_forward_rows;
use wgnn::internals::rng::Rng;
use wgnn::{Tensor, WgnnError};

#[test]
fn flash_is_picked_where_it_runs_and_clear_elsewhere() {
    let gpu = gpu();
    let dims = |b, t, c, nh| AttentionDims::new("test", b, t, c, nh).unwrap();
    // char_gpt's recipe at its block, nanoGPT's Shakespeare config at its block of 256.
    assert_eq!(choose_attention_kernel(&gpu, &dims(12, 64, 128, 4)), AttentionKernel::Flash);
    assert_eq!(choose_attention_kernel(&gpu, &dims(64, 256, 384, 6)), AttentionKernel::Flash);
    // Heads past the flash kernels' registers, sequences past their loop budget.
    assert_eq!(choose_attention_kernel(&gpu, &dims(2, 64, 130, 2)), AttentionKernel::Clear);
    assert_eq!(choose_attention_kernel(&gpu, &dims(1, 709, 64, 1)), AttentionKernel::Clear);
}

/// Each kernel through AttentionBuffers gives the reference's out and dqkv.
#[test]
fn attention_buffers_run_either_kernel() {
    let gpu = gpu();
    let mut rng = Rng::new(40);
    let (b, t, c, nh) = (2, 19, 24, 3);
    let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    let (out, probs, _) = cpu::attention_forward(&qkv, b, t, c, nh);
    let dqkv = cpu::attention_backward(&dout, &qkv, &probs, b, t, c, nh);
    let dims = AttentionDims::new("test", b, t, c, nh).unwrap();
    for kernel in [AttentionKernel::Clear, AttentionKernel::Flash] {
        let buffers = AttentionBuffers::new(&gpu, dims, kernel).unwrap();
        let qkv_t = Tensor::from_slice(&gpu, &[b, t, 3 * c], &qkv).unwrap();
        let dout_t = Tensor::from_slice(&gpu, &[b, t, c], &dout).unwrap();
        let (out_t, dqkv_t) = (Tensor::zeros(&gpu, &[b, t, c]).unwrap(), Tensor::zeros(&gpu, &[b, t, 3 * c]).unwrap());
        let forward = buffers.forward(&gpu, &qkv_t, &out_t).unwrap();
        let backward = buffers.backward(&gpu, &dout_t, &qkv_t, &out_t, &dqkv_t).unwrap();
        gpu.run(&[&forward, &backward]).unwrap();
        let name = kernel.name();
        assert_close(&format!("{name} out"), &out_t.to_vec().unwrap(), &out, 1e-5, 1e-4);
        assert_close(&format!("{name} dqkv"), &dqkv_t.to_vec().unwrap(), &dqkv, 2e-5, 1e-3);
        let other = Tensor::zeros(&gpu, &[b, t + 1, 3 * c]).unwrap();
        expect_err(&format!("{name} other qkv"), buffers.forward(&gpu, &other, &out_t), &["attention forward", "qkv"]);
    }
}

/// 16 sequences of 2,048 tokens in 16 heads: the clear kernels' scores would take 4 GiB, past
/// every adapter's storage binding; refused before anything is allocated.
#[test]
fn clear_scores_past_the_binding_limit_are_an_error() {
    let gpu = gpu();
    let dims = AttentionDims::new("test", 16, 2048, 1024, 16).unwrap();
    let err = AttentionBuffers::new(&gpu, dims, AttentionKernel::Clear).err().expect("an error");
    assert!(matches!(err, WgnnError::DeviceLimit { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("attention") && text.contains("[16, 16, 2048, 2048]"), "{text}");
    expect_err("no heads", AttentionDims::new("attention", 1, 4, 8, 0), &["attention", "0 heads"]);
    expect_err("empty", AttentionDims::new("attention", 0, 4, 8, 2), &["attention", "empty"]);
    expect_err("u32 scores", AttentionDims::new("attention", 1024, 4096, 64, 1), &["attention", "2^32"]);
}

/// 524,289 sequences of 4 tokens in 2 heads of 1: 4,194,312 rows, so the flash kernels' one-row
/// dispatches and the clear kernels' softmax, values and score dispatches each need more than
/// 65,535 workgroups of 64, folded into a second grid dimension; both match the reference.
#[test]
fn dispatches_past_65535_workgroups_match_the_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(41);
    let (b, t, c, nh) = (524_289, 4, 2, 2);
    let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    let (out, probs, lse) = cpu::attention_forward(&qkv, b, t, c, nh);
    let dqkv = cpu::attention_backward(&dout, &qkv, &probs, b, t, c, nh);
    drop(probs);
    let qkv_t = Tensor::from_slice(&gpu, &[b, t, 3 * c], &qkv).unwrap();
    let dout_t = Tensor::from_slice(&gpu, &[b, t, c], &dout).unwrap();
    let dims = AttentionDims::new("test", b, t, c, nh).unwrap();
    for kernel in [AttentionKernel::Clear, AttentionKernel::Flash] {
        let buffers = AttentionBuffers::new(&gpu, dims, kernel).unwrap();
        let (out_t, dqkv_t) = (Tensor::zeros(&gpu, &[b, t, c]).unwrap(), Tensor::zeros(&gpu, &[b, t, 3 * c]).unwrap());
        let forward = match kernel {
            AttentionKernel::Clear => buffers.forward(&gpu, &qkv_t, &out_t).unwrap(),
            // One row per invocation, as the backward: past the limit too.
            AttentionKernel::Flash => {
                flash_attention_forward_rows(&gpu, &qkv_t, &out_t, &buffers.saved, nh, 1).unwrap()
            }
        };
        let backward = buffers.backward(&gpu, &dout_t, &qkv_t, &out_t, &dqkv_t).unwrap();
        let folded = forward.dispatches.iter().chain(&backward.dispatches).filter(|d| d.workgroups[1] > 1).count();
        assert!(folded >= 2, "{}: {folded} dispatches folded", kernel.name());
        gpu.run(&[&forward, &backward]).unwrap();
        let name = kernel.name();
        assert_close(&format!("{name} out"), &out_t.to_vec().unwrap(), &out, 1e-5, 1e-4);
        assert_close(&format!("{name} dqkv"), &dqkv_t.to_vec().unwrap(), &dqkv, 2e-5, 1e-3);
        if kernel == AttentionKernel::Flash {
            assert_close("flash lse", &buffers.saved.to_vec().unwrap(), &lse, 1e-5, 1e-5);
        }
    }
}
