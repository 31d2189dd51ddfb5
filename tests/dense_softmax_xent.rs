//! dense_softmax_xent.wgsl (the output layer, its loss and the backward pass into the layer below
//! in one dispatch) against the CPU reference; the reference against the unfused kernels' references
//! and by finite differences; bad input; how many rows a training step fuses under each policy.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::dense_softmax_xent::{
    dense_softmax_xent, dense_softmax_xent_fits, dense_softmax_xent_preferred, DenseSoftmaxXentOut,
    UNIFORM_WINDOW_FLOATS,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, GpuOptions, ProfileOverride, Tensor, WgnnError};

const ACTS: &[Activation] =
    &[Activation::Identity, Activation::Relu, Activation::LeakyRelu(0.1), Activation::Sigmoid, Activation::Tanh];

/// A random batch: h the output of `act` (so act′ reads a real output), W, b, labels.
fn batch(rng: &mut Rng, rows: usize, k: usize, c: usize, act: Activation) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<u32>) {
    let pre = rng.vec_uniform(rows * k, -2.0, 2.0);
    let h = cpu::bias_act_forward(&pre, None, rows, k, act);
    let w = rng.vec_uniform(k * c, -1.0, 1.0);
    let b = rng.vec_uniform(c, -0.5, 0.5);
    let labels = (0..rows).map(|_| rng.below(c) as u32).collect();
    (h, w, b, labels)
}

#[test]
fn matches_cpu_on_awkward_shapes() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    // (rows, K, C): one row, one input, two classes; the mnist model's last layer at batch 32 and
    // 256; rows past one workgroup of 256 (several rows per invocation); the widest C.
    for &(rows, k, c) in &[(1, 1, 2), (5, 3, 10), (32, 64, 10), (256, 64, 10), (300, 7, 3), (33, 20, 32), (2048, 4, 5)]
    {
        for (i, &act) in ACTS.iter().enumerate() {
            assert!(dense_softmax_xent_fits(rows, k, c), "{rows}x{k}x{c}");
            let (h, w, b, labels) = batch(&mut rng, rows, k, c, act);
            let scale = 1.0 / rows as f32;
            let up = |shape: &[usize], v: &[f32]| Tensor::from_slice(&gpu, shape, v).unwrap();
            // Every other case has W and b in one buffer with room after them, as a model's
            // parameters are: the kernel then reads them through a uniform window.
            let window = i % 2 == 0;
            let (ht, wt, bt) = if window {
                let b_at = (k * c).next_multiple_of(64);
                let mut flat = vec![0.0; b_at + UNIFORM_WINDOW_FLOATS];
                flat[..k * c].copy_from_slice(&w);
                flat[b_at..b_at + c].copy_from_slice(&b);
                let both = up(&[flat.len()], &flat);
                (up(&[rows, k], &h), both.view(0, &[k, c]).unwrap(), both.view(b_at, &[c]).unwrap())
            } else {
                (up(&[rows, k], &h), up(&[k, c], &w), up(&[c], &b))
            };
            let lt = Tensor::from_u32(&gpu, &[rows], &labels).unwrap();
            let (dzt, dht) = (Tensor::zeros(&gpu, &[rows, c]).unwrap(), Tensor::zeros(&gpu, &[rows, k]).unwrap());
            let totals = up(&[2], &[0.5, 1.0]);
            let out = DenseSoftmaxXentOut { dz: &dzt, dh: &dht, totals: &totals };
            let plan = dense_softmax_xent(&gpu, &ht, &wt, &bt, &lt, act, scale, &out).unwrap();
            assert_eq!(plan.len(), 1, "one dispatch");
            let family = if window { "dense_softmax_xent_uniform" } else { "dense_softmax_xent::" };
            assert!(plan.dispatches[0].label.starts_with(family), "{}", plan.dispatches[0].label);
            gpu.run(&[&plan]).unwrap();
            let (dz, dh, loss, correct) = cpu::dense_softmax_xent(&h, &w, &b, &labels, rows, k, c, scale, act);
            let what = format!("dense_softmax_xent {rows}x{k}·{k}x{c} {act:?} window={window}");
            assert_close(&format!("{what} dz"), &dzt.to_vec().unwrap(), &dz, 1e-6, 1e-4);
            assert_close(&format!("{what} dh"), &dht.to_vec().unwrap(), &dh, 1e-6, 1e-4);
            // Added to what the totals held.
            assert_close(
                &format!("{what} totals"),
                &totals.to_vec().unwrap(),
                &[0.5 + loss, 1.0 + correct],
                1e-3,
                1e-4,
            );
        }
    }
}

#[test]
fn reference_is_the_unfused_kernels_and_its_gradients_are_right() {
    let mut rng = Rng::new(32);
    let (rows, k, c) = (6, 5, 4);
    for &act in ACTS {
        let pre = rng.vec_uniform(rows * k, -2.0, 2.0);
        let h = cpu::bias_act_forward(&pre, None, rows, k, act);
        let w = rng.vec_uniform(k * c, -1.0, 1.0);
        let b = rng.vec_uniform(c, -0.5, 0.5);
        let labels: Vec<u32> = (0..rows).map(|r| (r % c) as u32).collect();
        let scale = 1.0 / rows as f32;
        let (dz, dh, loss, correct) = cpu::dense_softmax_xent(&h, &w, &b, &labels, rows, k, c, scale, act);
        // The unfused step: bias_act forward of h·W, softmax_xent, then dZ·Wᵀ ⊙ act′(h).
        let z = cpu::bias_act_forward(
            &cpu::matmul(&h, &w, rows, k, c, false, false),
            Some(&b),
            rows,
            c,
            Activation::Identity,
        );
        let (l, dz_want, ok) = cpu::softmax_xent(&z, &labels, rows, c, scale);
        let (dh_want, _) =
            cpu::bias_act_backward(&cpu::matmul(&dz_want, &w, rows, c, k, false, true), &h, rows, k, act);
        assert_close(&format!("{act:?}: dz"), &dz, &dz_want, 1e-7, 1e-6);
        assert_close(&format!("{act:?}: dh"), &dh, &dh_want, 1e-7, 1e-6);
        assert_close(&format!("{act:?}: sums"), &[loss, correct], &[l.iter().sum(), ok.iter().sum()], 1e-6, 1e-6);
        // dh is d(mean loss)/d(the layer below's pre-activation), by finite differences through act.
        let mean_loss = |p: &[f32]| {
            let h = cpu::bias_act_forward(p, None, rows, k, act);
            cpu::dense_softmax_xent(&h, &w, &b, &labels, rows, k, c, 1.0, act).2 as f64 / rows as f64
        };
        // (relu's: away from its kink, where the one-sided slopes differ.)
        let kinked = matches!(act, Activation::Relu | Activation::LeakyRelu(_));
        if !kinked || pre.iter().all(|v| v.abs() > 2e-2) {
            assert_close(
                &format!("{act:?}: dh numerically"),
                &dh,
                &numeric_gradient(&pre, 1e-2, mean_loss),
                1e-3,
                1e-2,
            );
        }
        // dz is d(mean loss)/d(logits): by finite differences of b (each column's bias adds to its
        // logits in every row, so d/db = Σ_rows dz).
        let mean_loss_b =
            |bb: &[f32]| cpu::dense_softmax_xent(&h, &w, bb, &labels, rows, k, c, 1.0, act).2 as f64 / rows as f64;
        let db: Vec<f32> = (0..c).map(|j| (0..rows).map(|r| dz[r * c + j]).sum()).collect();
        assert_close(&format!("{act:?}: Σ dz numerically"), &db, &numeric_gradient(&b, 1e-2, mean_loss_b), 1e-3, 1e-2);
    }
}

/// A label ≥ C that the host could not check (written after the upload, so the tensor's known
/// maximum is stale) makes the loss total NaN and counts that row as wrong; dZ and dH are the CPU
/// reference's (the row's softmax·grad_scale). Guards the NaN the kernel makes at run time since
/// Tint refused it as a constant (issue 26), with W in storage and through the uniform window.
#[test]
fn an_unchecked_label_out_of_range_makes_the_loss_nan() {
    let gpu = gpu();
    let mut rng = Rng::new(33);
    let (rows, k, c) = (70, 6, 5);
    for window in [false, true] {
        let act = Activation::Tanh;
        let (h, w, b, mut labels) = batch(&mut rng, rows, k, c, act);
        (labels[0], labels[65]) = (c as u32, u32::MAX);
        let up = |shape: &[usize], v: &[f32]| Tensor::from_slice(&gpu, shape, v).unwrap();
        let (wt, bt) = if window {
            let mut flat = vec![0.0; 64 + UNIFORM_WINDOW_FLOATS];
            flat[..k * c].copy_from_slice(&w);
            flat[64..64 + c].copy_from_slice(&b);
            let both = up(&[flat.len()], &flat);
            (both.view(0, &[k, c]).unwrap(), both.view(64, &[c]).unwrap())
        } else {
            (up(&[k, c], &w), up(&[c], &b))
        };
        let lt = Tensor::zeros_u32(&gpu, &[rows]).unwrap();
        lt.write_u32(&labels).unwrap();
        let (ht, dzt, dht) =
            (up(&[rows, k], &h), up(&[rows, c], &vec![f32::NAN; rows * c]), up(&[rows, k], &vec![f32::NAN; rows * k]));
        let totals = up(&[2], &[0.0, 0.0]);
        let out = DenseSoftmaxXentOut { dz: &dzt, dh: &dht, totals: &totals };
        let plan = dense_softmax_xent(&gpu, &ht, &wt, &bt, &lt, act, 0.25, &out).unwrap();
        gpu.run(&[&plan]).unwrap();
        let (dz, dh, loss, correct) = cpu::dense_softmax_xent(&h, &w, &b, &labels, rows, k, c, 0.25, act);
        assert!(loss.is_nan(), "the reference's loss is {loss}");
        let what = format!("window={window}");
        assert_close(&format!("{what} dz"), &dzt.to_vec().unwrap(), &dz, 1e-6, 1e-4);
        assert_close(&format!("{what} dh"), &dht.to_vec().unwrap(), &dh, 1e-6, 1e-4);
        let got = totals.to_vec().unwrap();
        assert!(got[0].is_nan(), "{what}: the loss total is {}", got[0]);
        assert_eq!(got[1], correct, "{what}: correct total");
    }
}

#[test]
fn bad_input_is_an_error_naming_the_kernel() {
    let gpu = gpu();
    let z = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let (h, w, b) = (z(&[4, 3]), z(&[3, 5]), z(&[5]));
    let labels = Tensor::from_u32(&gpu, &[4], &[0, 1, 2, 4]).unwrap();
    let (dz, dh, totals) = (z(&[4, 5]), z(&[4, 3]), z(&[2]));
    let out = DenseSoftmaxXentOut { dz: &dz, dh: &dh, totals: &totals };
    let relu = Activation::Relu;
    let ok = dense_softmax_xent(&gpu, &h, &w, &b, &labels, relu, 0.25, &out);
    assert!(ok.is_ok(), "{:?}", ok.err());
    let named = |e: WgnnError| assert!(e.to_string().contains("dense_softmax_xent"), "{e}");
    // W whose rows are not h's columns.
    named(dense_softmax_xent(&gpu, &h, &z(&[4, 5]), &b, &labels, relu, 0.25, &out).err().unwrap());
    // A label past the classes.
    let bad = Tensor::from_u32(&gpu, &[4], &[0, 1, 2, 5]).unwrap();
    let err = dense_softmax_xent(&gpu, &h, &w, &b, &bad, relu, 0.25, &out).err().unwrap();
    assert!(matches!(err, WgnnError::LabelOutOfRange { label: 5, classes: 5, .. }), "{err}");
    // Too many classes for the private array, and a softmax below (not elementwise).
    let wide = DenseSoftmaxXentOut { dz: &z(&[4, 33]), dh: &dh, totals: &totals };
    named(dense_softmax_xent(&gpu, &h, &z(&[3, 33]), &z(&[33]), &labels, relu, 0.25, &wide).err().unwrap());
    named(dense_softmax_xent(&gpu, &h, &w, &b, &labels, Activation::Softmax, 0.25, &out).err().unwrap());
    // A GELU below: its derivative needs its input, and h is its output.
    for gelu in [Activation::Gelu, Activation::GeluErf] {
        let err = dense_softmax_xent(&gpu, &h, &w, &b, &labels, gelu, 0.25, &out).err().expect("a GELU below");
        assert!(err.to_string().contains("dense_softmax_xent") && err.to_string().contains("needs its input"), "{err}");
    }
    // Outputs of the wrong shape or sharing memory, and a non-finite scale.
    let short = DenseSoftmaxXentOut { dz: &z(&[4, 4]), dh: &dh, totals: &totals };
    named(dense_softmax_xent(&gpu, &h, &w, &b, &labels, relu, 0.25, &short).err().unwrap());
    let aliased = DenseSoftmaxXentOut { dz: &dz, dh: &h, totals: &totals };
    named(dense_softmax_xent(&gpu, &h, &w, &b, &labels, relu, 0.25, &aliased).err().unwrap());
    named(dense_softmax_xent(&gpu, &h, &w, &b, &labels, relu, f32::NAN, &out).err().unwrap());
    // Past the rows one workgroup takes.
    assert!(!dense_softmax_xent_fits(2049, 4, 5) && !dense_softmax_xent_fits(64, 4096, 32));
    // W past the workgroup memory it is staged in.
    assert!(dense_softmax_xent_fits(8, 96, 32) && !dense_softmax_xent_fits(8, 97, 32));
}

#[test]
fn the_uniform_window_is_taken_only_where_it_is_safe() {
    // W and b in one buffer with room after them: the window. The same with the totals in that
    // buffer too (written by the dispatch: wgpu would reject uniform and writable storage use of one
    // buffer), or b before W: from storage. Every case gives the reference's result.
    let gpu = gpu();
    let mut rng = Rng::new(37);
    let (rows, k, c) = (8, 12, 4);
    let act = Activation::Relu;
    let (h, w, b, labels) = batch(&mut rng, rows, k, c, act);
    let up = |shape: &[usize], v: &[f32]| Tensor::from_slice(&gpu, shape, v).unwrap();
    let (ht, lt) = (up(&[rows, k], &h), Tensor::from_u32(&gpu, &[rows], &labels).unwrap());
    let (dz, dh, _, _) = cpu::dense_softmax_xent(&h, &w, &b, &labels, rows, k, c, 0.5, act);
    // Layout: [b at 0 | W at 64 | totals at 128 | room].
    let mut flat = vec![0.0; 192 + UNIFORM_WINDOW_FLOATS];
    flat[..c].copy_from_slice(&b);
    flat[64..64 + k * c].copy_from_slice(&w);
    for (case, (w_at, b_at, totals_in_buffer), family) in [
        ("W then b", (0, 64, false), "dense_softmax_xent_uniform"),
        ("totals in W's buffer", (0, 64, true), "dense_softmax_xent::"),
        ("b before W", (64, 0, false), "dense_softmax_xent::"),
    ] {
        let mut flat = flat.clone();
        if w_at == 0 {
            // W first, then b at 64.
            flat[..k * c].copy_from_slice(&w);
            flat[64..64 + c].copy_from_slice(&b);
        }
        let both = up(&[flat.len()], &flat);
        let (wt, bt) = (both.view(w_at, &[k, c]).unwrap(), both.view(b_at, &[c]).unwrap());
        let own_totals = up(&[2], &[0.0, 0.0]);
        let totals = if totals_in_buffer { both.view(128, &[2]).unwrap() } else { own_totals };
        let (dzt, dht) = (Tensor::zeros(&gpu, &[rows, c]).unwrap(), Tensor::zeros(&gpu, &[rows, k]).unwrap());
        let out = DenseSoftmaxXentOut { dz: &dzt, dh: &dht, totals: &totals };
        let plan = dense_softmax_xent(&gpu, &ht, &wt, &bt, &lt, act, 0.5, &out).unwrap();
        assert!(plan.dispatches[0].label.starts_with(family), "{case}: {}", plan.dispatches[0].label);
        gpu.run(&[&plan]).unwrap();
        assert_close(&format!("{case}: dz"), &dzt.to_vec().unwrap(), &dz, 1e-6, 1e-4);
        assert_close(&format!("{case}: dh"), &dht.to_vec().unwrap(), &dh, 1e-6, 1e-4);
    }
}

#[test]
fn the_profile_caps_the_rows_a_training_step_fuses() {
    // Up to 64 rows under the CPU-adapter policy (one core runs the one workgroup), up to 256 under
    // a GPU's: each forced on whatever adapter this is.
    let device = |profile, limits| {
        Gpu::with_options(&GpuOptions { profile, limits, ..Default::default() })
            .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
    };
    for (profile, most) in [(ProfileOverride::CpuAdapter, 64), (ProfileOverride::Gpu, 256)] {
        let gpu = device(profile, |l| l);
        assert_eq!(gpu.profile().fused_output_max_rows, most, "{profile:?}");
        assert!(dense_softmax_xent_preferred(&gpu, most, 64, 10), "{profile:?}: {most} rows");
        assert!(!dense_softmax_xent_preferred(&gpu, most + 1, 64, 10), "{profile:?}: {} rows", most + 1);
        // Never a shape the kernel does not take.
        assert!(!dense_softmax_xent_preferred(&gpu, 8, 97, 32), "{profile:?}");
    }
    // The shared device: by its adapter's policy.
    let gpu = gpu();
    let most = gpu.profile().fused_output_max_rows;
    assert!(dense_softmax_xent_preferred(&gpu, most, 64, 10) && !dense_softmax_xent_preferred(&gpu, most + 1, 64, 10));
    // A device asked for less workgroup memory than the kernel stages W in (14 KiB): never.
    let small = device(ProfileOverride::Gpu, |l| wgpu::Limits { max_compute_workgroup_storage_size: 8192, ..l });
    assert!(!dense_softmax_xent_preferred(&small, 32, 64, 10));
}
