//! shaders/flash_attention_subgroup.wgsl (the flash kernels sharing each head row's loads across
//! a subgroup of 8) against the CPU reference: heads of 1 to 16 vec4s (one and two loads per
//! lane), sequences around the workgroup's 8·ROWS rows, 1, 2 and 4 rows per lane, causal or not;
//! the refusal where the kernels cannot run; and which kernels the wrappers pick on this device.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::flash_attention::{
    flash_attention_backward, flash_attention_backward_subgroup, flash_attention_forward,
    flash_attention_forward_subgroup,
};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, GpuOptions, Tensor};

fn nan_tensor(gpu: &Gpu, shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, shape, &vec![f32::NAN; shape.iter().product()]).unwrap()
}

/// Whether the subgroup kernels run on `gpu` (subgroups of at least 8); where they do not, the
/// test says so, and checks the refusal instead.
fn subgroup_kernels_run(gpu: &Gpu) -> bool {
    let runs = gpu.profile().matmul.subgroup_kernel;
    if !runs {
        eprintln!(
            "flash kernels on subgroups: not run on {} ({}): it needs subgroups of at least 8",
            gpu.describe(),
            gpu.profile().describe()
        );
    }
    runs
}

/// The subgroup forward and backward at (B, T, NH, hs) with `rows` query rows per lane against
/// the CPU reference (the backward from the GPU forward's out and lse); every output starts as NaN
/// so that an unwritten value shows.
fn check(gpu: &Gpu, rng: &mut Rng, (b, t, nh, hs): (usize, usize, usize, usize), rows: usize, causal: bool) {
    let c = nh * hs;
    let what = format!("subgroup flash backward B{b} T{t} NH{nh} hs{hs}, {rows} rows, causal {causal}");
    let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    let qkv_t = Tensor::from_slice(gpu, &[b, t, 3 * c], &qkv).unwrap();
    let dout_t = Tensor::from_slice(gpu, &[b, t, c], &dout).unwrap();
    let (out_t, lse_t) = (nan_tensor(gpu, &[b, t, c]), nan_tensor(gpu, &[b, nh, t]));
    let (delta_t, dqkv_t) = (nan_tensor(gpu, &[b, nh, t]), nan_tensor(gpu, &[b, t, 3 * c]));
    let forward = flash_attention_forward_subgroup(gpu, &qkv_t, &out_t, &lse_t, nh, rows, causal).unwrap();
    assert_eq!(labels(&forward), ["flash_attention_subgroup::flash_attention_forward_sg"], "{what}");
    let backward =
        flash_attention_backward_subgroup(gpu, &dout_t, &qkv_t, &out_t, &lse_t, &delta_t, &dqkv_t, nh, rows, causal)
            .unwrap();
    assert_eq!(backward.len(), 2, "{what}: dispatches");
    assert!(backward.dispatches.iter().all(|d| d.label.ends_with("_sg")), "{what}: {:?}", labels(&backward));
    gpu.run(&[&forward, &backward]).unwrap();
    let (out, lse) = (out_t.to_vec().unwrap(), lse_t.to_vec().unwrap());
    let (want_out, want_lse) = cpu::flash_attention_forward_masked(&qkv, b, t, c, nh, causal);
    assert_close(&format!("{what} out"), &out, &want_out, 1e-5, 1e-4);
    assert_close(&format!("{what} lse"), &lse, &want_lse, 1e-5, 1e-5);
    let want = cpu::flash_attention_backward_masked(&dout, &qkv, &out, &lse, b, t, c, nh, causal);
    assert_close(&format!("{what} dqkv"), &dqkv_t.to_vec().unwrap(), &want, 2e-5, 1e-3);
    // D = rowsum(dout ⊙ out), written by the dq dispatch for every row.
    let mut delta = vec![0.0f32; b * nh * t];
    for bi in 0..b {
        for h in 0..nh {
            for i in 0..t {
                let at = (bi * t + i) * c + h * hs;
                delta[(bi * nh + h) * t + i] = (0..hs).map(|d| dout[at + d] * out[at + d]).sum();
            }
        }
    }
    assert_close(&format!("{what} delta"), &delta_t.to_vec().unwrap(), &delta, 1e-5, 1e-4);
}

/// dout, qkv, out, lse, delta and dqkv at (B, T, NH, hs), NaN (plans are built, not run).
fn operands(gpu: &Gpu, (b, t, nh, hs): (usize, usize, usize, usize)) -> [Tensor; 6] {
    let c = nh * hs;
    [[b, t, c], [b, t, 3 * c], [b, t, c], [b, nh, t], [b, nh, t], [b, t, 3 * c]].map(|shape| nan_tensor(gpu, &shape))
}

fn labels(plan: &wgnn::internals::plan::Plan) -> Vec<&str> {
    plan.dispatches.iter().map(|d| d.label.as_str()).collect()
}

#[test]
fn subgroup_kernels_match_cpu() {
    let gpu = gpu();
    if !subgroup_kernels_run(&gpu) {
        return refused_on(&gpu);
    }
    let mut rng = Rng::new(40);
    // Heads of 1, 2, 8, 9 and 16 vec4s (hs 4 … 64: lanes past the head's vec4s load a copy; over 8,
    // a second load per lane); T 1 to 65 around the workgroup's 8, 16 and 32 rows.
    for (shape, rows) in [
        ((1, 1, 1, 4), 1),
        ((2, 7, 2, 8), 2),
        ((1, 9, 3, 32), 1),
        ((3, 17, 2, 32), 2),
        ((1, 33, 1, 36), 2),
        ((2, 64, 4, 32), 2),
        ((1, 65, 2, 64), 2),
        ((2, 23, 1, 64), 1),
        ((2, 40, 1, 32), 4),
    ] {
        for causal in [true, false] {
            check(&gpu, &mut rng, shape, rows, causal);
        }
    }
}

/// Runs where the kernels cannot: a device without `Features::SUBGROUP` on any adapter, and on
/// one with it, heads of an odd size.
#[test]
fn subgroup_kernels_are_refused_where_they_cannot_run() {
    let no_subgroups = Gpu::with_options(&GpuOptions {
        features: |f: wgpu::Features| f - wgpu::Features::SUBGROUP,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    assert!(!no_subgroups.profile().matmul.subgroup_kernel);
    refused_on(&no_subgroups);
    let gpu = gpu();
    let [dout, qkv, out, lse, delta, dqkv] = operands(&gpu, (1, 5, 2, 6));
    let err = flash_attention_backward_subgroup(&gpu, &dout, &qkv, &out, &lse, &delta, &dqkv, 2, 1, true)
        .err()
        .expect("heads of 6 values refused");
    let text = err.to_string();
    assert!(text.contains("flash_attention_backward") && text.contains("here 6"), "{text}");
}

/// Both subgroup wrappers refuse on `gpu`, naming the op and what they need.
fn refused_on(gpu: &Gpu) {
    let [dout, qkv, out, lse, delta, dqkv] = operands(gpu, (1, 5, 2, 8));
    let err = flash_attention_backward_subgroup(gpu, &dout, &qkv, &out, &lse, &delta, &dqkv, 2, 1, true)
        .err()
        .expect("refused without subgroups of 8");
    let text = err.to_string();
    assert!(text.contains("flash_attention_backward") && text.contains("subgroups of at least 8"), "{text}");
    let err = flash_attention_forward_subgroup(gpu, &qkv, &out, &lse, 2, 1, false).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("flash_attention_forward") && text.contains("subgroups of at least 8"), "{text}");
}

/// The wrappers' pick: the subgroup kernels where the profile prefers subgroups and they run,
/// the plain ones elsewhere (both checked against the reference, here and in flash_attention.rs).
#[test]
fn the_wrappers_run_the_kernels_the_profile_prefers() {
    let gpu = gpu();
    let [dout, qkv, out, lse, delta, dqkv] = operands(&gpu, (2, 9, 2, 8));
    let mut plan = flash_attention_forward(&gpu, &qkv, &out, &lse, 2).unwrap();
    plan.extend(flash_attention_backward(&gpu, &dout, &qkv, &out, &lse, &delta, &dqkv, 2).unwrap());
    let policy = gpu.profile().matmul;
    let (family, suffix) = match policy.prefer_subgroup && policy.subgroup_kernel {
        true => ("flash_attention_subgroup", "_sg"),
        false => ("flash_attention_vec4", ""),
    };
    let want: Vec<String> = ["forward", "backward_dq", "backward_dkv"]
        .iter()
        .map(|kernel| format!("{family}::flash_attention_{kernel}{suffix}"))
        .collect();
    assert_eq!(labels(&plan), want, "{}", gpu.profile().describe());
}
