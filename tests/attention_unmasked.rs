//! Attention without the causal mask (every query attends to every key): both kernel families
//! through AttentionBuffers against the CPU reference on odd shapes (one token, 19, 65; heads of
//! 4, 5 and 16 values: the vec4 and the scalar flash kernels), the flash reference against the
//! clear one, and the reference's backward against finite differences.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::attention_choice::{AttentionBuffers, AttentionKernel};
use wgnn::internals::kernels::attention_dims::AttentionDims;
use wgnn::internals::rng::Rng;
use wgnn::Tensor;

#[test]
fn both_kernels_without_the_mask_match_the_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(41);
    for (b, t, c, nh) in [(2, 1, 12, 3), (1, 19, 24, 6), (2, 65, 15, 3), (1, 33, 16, 1)] {
        let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
        let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
        let (out, probs, lse) = cpu::attention_forward_masked(&qkv, b, t, c, nh, false);
        let dqkv = cpu::attention_backward_masked(&dout, &qkv, &probs, b, t, c, nh, false);
        // The flash reference (probabilities rebuilt from lse) is the same function.
        let flash_dqkv = cpu::flash_attention_backward_masked(&dout, &qkv, &out, &lse, b, t, c, nh, false);
        assert_close(&format!("{b}×{t}×{c}/{nh}: flash reference dqkv"), &flash_dqkv, &dqkv, 1e-5, 1e-4);
        if t > 1 {
            // The mask matters at this shape: the first token's output differs with it.
            let (causal, _, _) = cpu::attention_forward(&qkv, b, t, c, nh);
            assert!(causal[..c].iter().zip(&out[..c]).any(|(a, o)| (a - o).abs() > 1e-3), "{b}×{t}×{c}/{nh}");
        }
        let dims = AttentionDims { causal: false, ..AttentionDims::new("test", b, t, c, nh).unwrap() };
        for kernel in [AttentionKernel::Clear, AttentionKernel::Flash] {
            let what = format!("{b}×{t}×{c}/{nh}, {}", kernel.name());
            let buffers = AttentionBuffers::new(&gpu, dims, kernel).unwrap();
            let qkv_t = Tensor::from_slice(&gpu, &[b, t, 3 * c], &qkv).unwrap();
            let dout_t = Tensor::from_slice(&gpu, &[b, t, c], &dout).unwrap();
            let out_t = Tensor::zeros(&gpu, &[b, t, c]).unwrap();
            let dqkv_t = Tensor::zeros(&gpu, &[b, t, 3 * c]).unwrap();
            let forward = buffers.forward(&gpu, &qkv_t, &out_t).unwrap();
            let backward = buffers.backward(&gpu, &dout_t, &qkv_t, &out_t, &dqkv_t).unwrap();
            gpu.run(&[&forward, &backward]).unwrap();
            assert_close(&format!("{what}: out"), &out_t.to_vec().unwrap(), &out, 1e-5, 1e-4);
            let saved = match kernel {
                AttentionKernel::Clear => &probs,
                AttentionKernel::Flash => &lse,
            };
            assert_close(&format!("{what}: saved"), &buffers.saved.to_vec().unwrap(), saved, 1e-5, 1e-4);
            assert_close(&format!("{what}: dqkv"), &dqkv_t.to_vec().unwrap(), &dqkv, 2e-5, 1e-3);
        }
    }
}

#[test]
fn the_unmasked_reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(42);
    let (b, t, c, nh) = (2, 4, 6, 2);
    let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
    let w = rng.vec_uniform(b * t * c, -1.0, 1.0);
    let (_, probs, _) = cpu::attention_forward_masked(&qkv, b, t, c, nh, false);
    let analytic = cpu::attention_backward_masked(&w, &qkv, &probs, b, t, c, nh, false);
    let numeric = numeric_gradient(&qkv, 1e-2, |x| dot(&w, &cpu::attention_forward_masked(x, b, t, c, nh, false).0));
    assert!(analytic.iter().any(|g| g.abs() > 1e-2), "a zero gradient tests nothing");
    assert_close("unmasked dqkv", &analytic, &numeric, 1e-3, 1e-2);
}
