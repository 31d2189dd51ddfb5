//! layer_norm.wgsl against the CPU reference (forward with γ and β each optional, backward with
//! dγ and dβ accumulated or not), the reference against finite differences, PyTorch's numbers by
//! hand, determinism, a grid past the workgroup limit, and bad arguments; the parameters' half
//! of the backward on its own (layer_norm_backward_params) and dx with another gradient added
//! (layer_norm_backward_dx_add) against their references.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::layer_norm::{
    layer_norm_backward, layer_norm_backward_dx_add, layer_norm_backward_params, layer_norm_forward, LAYER_NORM_EPS,
};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, GpuOptions, ProfileOverride, Tensor, WgnnError};

const ROWS: &[usize] = &[1, 7, 1031];

/// A device under each policy, whatever the environment says: the CPU adapter's row kernels run
/// one invocation per row, the GPU's one workgroup per row with a tree reduction.
fn both_policies() -> Vec<(&'static str, Gpu)> {
    [("cpu-adapter policy", ProfileOverride::CpuAdapter), ("gpu policy", ProfileOverride::Gpu)]
        .into_iter()
        .map(|(name, profile)| (name, Gpu::with_options(&GpuOptions { profile, ..Default::default() }).unwrap()))
        .collect()
}
const COLS: &[usize] = &[1, 3, 4, 65, 128, 129, 384];

/// Rows with an offset and scale of their own, as the residual stream of a transformer has.
fn rows_of(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let (shift, scale) = (rng.uniform(-3.0, 3.0), rng.uniform(0.1, 4.0));
        x.extend((0..cols).map(|_| shift + scale * rng.normal()));
    }
    x
}

fn t(gpu: &Gpu, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, v).unwrap()
}

/// Which of γ and β a case has: (γ, β).
const AFFINE: [(bool, bool); 3] = [(true, true), (true, false), (false, false)];

/// Runs the forward on the GPU; (y, mean, rstd).
fn forward_gpu(
    gpu: &Gpu,
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    rows: usize,
    cols: usize,
) -> [Vec<f32>; 3] {
    let (xt, yt) = (t(gpu, &[rows, cols], x), Tensor::zeros(gpu, &[rows, cols]).unwrap());
    let (mt, st) = (Tensor::zeros(gpu, &[rows]).unwrap(), Tensor::zeros(gpu, &[rows]).unwrap());
    let gt = gamma.map(|g| t(gpu, &[cols], g));
    let bt = beta.map(|b| t(gpu, &[cols], b));
    let plan = layer_norm_forward(gpu, &xt, gt.as_ref(), bt.as_ref(), &yt, &mt, &st, LAYER_NORM_EPS).unwrap();
    gpu.run(&[&plan]).unwrap();
    [yt.to_vec().unwrap(), mt.to_vec().unwrap(), st.to_vec().unwrap()]
}

#[test]
fn forward_matches_cpu() {
    for (policy, gpu) in both_policies() {
        forward_matches_cpu_on(policy, &gpu);
    }
}

fn forward_matches_cpu_on(policy: &str, gpu: &Gpu) {
    let mut rng = Rng::new(41);
    for &rows in ROWS {
        for (i, &cols) in COLS.iter().enumerate() {
            let (has_gamma, has_beta) = AFFINE[(rows + i) % AFFINE.len()];
            let x = rows_of(&mut rng, rows, cols);
            let gamma = has_gamma.then(|| rng.vec_uniform(cols, 0.5, 2.0));
            let beta = has_beta.then(|| rng.vec_uniform(cols, -1.0, 1.0));
            let [y, mean, rstd] = forward_gpu(gpu, &x, gamma.as_deref(), beta.as_deref(), rows, cols);
            let (want_y, want_mean, want_rstd) =
                cpu::layer_norm_forward(&x, gamma.as_deref(), beta.as_deref(), rows, cols, LAYER_NORM_EPS);
            let what = format!("layer_norm_forward {rows}x{cols} gamma={has_gamma} beta={has_beta} {policy}");
            assert_close(&format!("{what} mean"), &mean, &want_mean, 1e-5, 1e-5);
            assert_close(&format!("{what} rstd"), &rstd, &want_rstd, 1e-5, 1e-4);
            assert_close(&format!("{what} y"), &y, &want_y, 1e-4, 1e-4);
        }
    }
}

#[test]
fn pytorch_numbers_by_hand() {
    // x = [1, 2, 3, 4]: μ = 2.5, biased σ² = 1.25, y = γ·(x − μ)/√(1.25 + 1e-5) + β, as
    // torch.nn.LayerNorm(4) computes; a single value normalises to β (its variance is 0).
    let gpu = gpu();
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let (gamma, beta) = ([2.0f32, 1.0, 0.5, -1.0], [0.5f32, 0.0, -0.5, 1.0]);
    let [y, mean, rstd] = forward_gpu(&gpu, &x, Some(&gamma), Some(&beta), 1, 4);
    let rs = 1.0 / (1.25f64 + 1e-5).sqrt();
    let want: Vec<f32> = (0..4).map(|c| ((x[c] as f64 - 2.5) * rs * gamma[c] as f64 + beta[c] as f64) as f32).collect();
    assert_close("y", &y, &want, 1e-6, 1e-6);
    assert_close("mean", &mean, &[2.5], 0.0, 0.0);
    assert_close("rstd", &rstd, &[rs as f32], 1e-7, 1e-6);
    let [y, _, rstd] = forward_gpu(&gpu, &[7.0], Some(&[3.0]), Some(&[0.25]), 1, 1);
    assert_close("one value: y", &y, &[0.25], 0.0, 0.0);
    assert_close("one value: rstd", &rstd, &[1.0 / 1e-5f32.sqrt()], 0.0, 1e-5);
}

#[test]
fn variance_is_two_pass_under_a_large_offset() {
    // 1e4 + N(0, 1): E[x²] − μ² in f32 loses every digit of σ² ≈ 1 (x² ≈ 1e8, ulp 8); the two-pass
    // variance keeps them.
    let gpu = gpu();
    let mut rng = Rng::new(42);
    let (rows, cols) = (3, 384);
    let x: Vec<f32> = (0..rows * cols).map(|_| 1e4 + rng.normal()).collect();
    let [y, _, rstd] = forward_gpu(&gpu, &x, None, None, rows, cols);
    let (want_y, _, want_rstd) = cpu::layer_norm_forward(&x, None, None, rows, cols, LAYER_NORM_EPS);
    assert_close("rstd", &rstd, &want_rstd, 0.0, 1e-3);
    assert_close("y", &y, &want_y, 2e-3, 1e-3);
}

/// Runs the backward on the GPU and compares dx, dγ, dβ with the CPU; (dγ, dβ) as run.
#[allow(clippy::too_many_arguments)]
fn check_backward(
    gpu: &Gpu,
    rng: &mut Rng,
    rows: usize,
    cols: usize,
    has_gamma: bool,
    want_dgamma: bool,
    want_dbeta: bool,
    accumulate: bool,
) -> (Vec<f32>, Vec<f32>) {
    let x = rows_of(rng, rows, cols);
    let gamma = has_gamma.then(|| rng.vec_uniform(cols, 0.5, 2.0));
    let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (_, mean, rstd) = cpu::layer_norm_forward(&x, gamma.as_deref(), None, rows, cols, LAYER_NORM_EPS);
    let (dx, dgamma, dbeta) = cpu::layer_norm_backward(&dy, &x, gamma.as_deref(), &mean, &rstd, rows, cols);
    let (start_g, start_b) = (rng.vec_uniform(cols, -1.0, 1.0), rng.vec_uniform(cols, -1.0, 1.0));
    let (xt, dyt, dxt) = (t(gpu, &[rows, cols], &x), t(gpu, &[rows, cols], &dy), t(gpu, &[rows, cols], &dy));
    let (mt, st) = (t(gpu, &[rows], &mean), t(gpu, &[rows], &rstd));
    let gt = gamma.as_ref().map(|g| t(gpu, &[cols], g));
    let (dgt, dbt) = (t(gpu, &[cols], &start_g), t(gpu, &[cols], &start_b));
    let (dg_arg, db_arg) = (want_dgamma.then_some(&dgt), want_dbeta.then_some(&dbt));
    let plan = layer_norm_backward(gpu, &dyt, &xt, gt.as_ref(), &mt, &st, &dxt, dg_arg, db_arg, accumulate).unwrap();
    gpu.run(&[&plan]).unwrap();
    let plus = |sum: &[f32], start: &[f32], wanted: bool| -> Vec<f32> {
        match wanted {
            false => start.to_vec(),
            true => sum.iter().zip(start).map(|(s, a)| if accumulate { s + a } else { *s }).collect(),
        }
    };
    let what = format!(
        "layer_norm_backward {rows}x{cols} gamma={has_gamma} dgamma={want_dgamma} dbeta={want_dbeta} \
         accumulate={accumulate} {:?}",
        gpu.profile().policy
    );
    let tol = 1e-4 * (rows as f32).sqrt();
    let (got_g, got_b) = (dgt.to_vec().unwrap(), dbt.to_vec().unwrap());
    assert_close(&format!("{what} dx"), &dxt.to_vec().unwrap(), &dx, 1e-4, 1e-3);
    assert_close(&format!("{what} dgamma"), &got_g, &plus(&dgamma, &start_g, want_dgamma), tol, 1e-4);
    assert_close(&format!("{what} dbeta"), &got_b, &plus(&dbeta, &start_b, want_dbeta), tol, 1e-4);
    (got_g, got_b)
}

#[test]
fn backward_matches_cpu() {
    for (_, gpu) in both_policies() {
        let mut rng = Rng::new(43);
        for &rows in ROWS {
            for (i, &cols) in COLS.iter().enumerate() {
                let has_gamma = (rows + i) % 3 != 2;
                check_backward(&gpu, &mut rng, rows, cols, has_gamma, true, true, (rows + i) % 2 == 0);
            }
        }
        // Only one parameter gradient, or none (a frozen γ, no β).
        check_backward(&gpu, &mut rng, 33, 65, true, true, false, false);
        check_backward(&gpu, &mut rng, 33, 65, true, false, true, true);
        check_backward(&gpu, &mut rng, 33, 65, true, false, false, false);
    }
}

#[test]
fn the_parameters_half_matches_cpu_and_the_whole_backward() {
    // layer_norm_backward_params: dγ and dβ (each, both, accumulated or not) without dx, against
    // its reference, and bit for bit the column sums layer_norm_backward writes.
    for (_, gpu) in both_policies() {
        let mut rng = Rng::new(47);
        for &rows in ROWS {
            for (i, &cols) in COLS.iter().enumerate() {
                let x = rows_of(&mut rng, rows, cols);
                let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
                let (_, mean, rstd) = cpu::layer_norm_forward(&x, None, None, rows, cols, LAYER_NORM_EPS);
                let (dgamma, dbeta) = cpu::layer_norm_backward_params(&dy, &x, &mean, &rstd, rows, cols);
                let (xt, dyt) = (t(&gpu, &[rows, cols], &x), t(&gpu, &[rows, cols], &dy));
                let (mt, st) = (t(&gpu, &[rows], &mean), t(&gpu, &[rows], &rstd));
                let start = rng.vec_uniform(cols, -1.0, 1.0);
                let accumulate = (rows + i) % 2 == 0;
                let (dgt, dbt) = (t(&gpu, &[cols], &start), t(&gpu, &[cols], &start));
                let plan =
                    layer_norm_backward_params(&gpu, &dyt, &xt, &mt, &st, Some(&dgt), Some(&dbt), accumulate).unwrap();
                assert_eq!(plan.dispatches.len(), 2, "two column passes, no dx");
                gpu.run(&[&plan]).unwrap();
                let plus = |sum: &[f32]| -> Vec<f32> {
                    sum.iter().zip(&start).map(|(s, a)| if accumulate { s + a } else { *s }).collect()
                };
                let what = format!("layer_norm_backward_params {rows}x{cols} accumulate={accumulate}");
                let tol = 1e-4 * (rows as f32).sqrt();
                let (got_g, got_b) = (dgt.to_vec().unwrap(), dbt.to_vec().unwrap());
                assert_close(&format!("{what} dgamma"), &got_g, &plus(&dgamma), tol, 1e-4);
                assert_close(&format!("{what} dbeta"), &got_b, &plus(&dbeta), tol, 1e-4);
                // The whole backward's column sums, from the same start.
                let (wg, wb, dx) = (t(&gpu, &[cols], &start), t(&gpu, &[cols], &start), t(&gpu, &[rows, cols], &dy));
                let whole = layer_norm_backward(&gpu, &dyt, &xt, None, &mt, &st, &dx, Some(&wg), Some(&wb), accumulate)
                    .unwrap();
                gpu.run(&[&whole]).unwrap();
                assert_eq!(wg.to_vec().unwrap(), got_g, "{what}: dgamma as the whole backward's");
                assert_eq!(wb.to_vec().unwrap(), got_b, "{what}: dbeta as the whole backward's");
            }
        }
        // Neither asked for: nothing to run; a wrong dγ is an error naming the kernel.
        let (x, dy) = (t(&gpu, &[3, 4], &[0.5; 12]), t(&gpu, &[3, 4], &[1.0; 12]));
        let (mean, rstd, wrong) = (t(&gpu, &[3], &[0.5; 3]), t(&gpu, &[3], &[1.0; 3]), t(&gpu, &[5], &[0.0; 5]));
        let plan = layer_norm_backward_params(&gpu, &dy, &x, &mean, &rstd, None, None, false).unwrap();
        assert!(plan.dispatches.is_empty(), "{} dispatches", plan.dispatches.len());
        let err = layer_norm_backward_params(&gpu, &dy, &x, &mean, &rstd, Some(&wrong), None, false)
            .err()
            .expect("a [5] dgamma for 4 columns");
        assert!(err.to_string().contains("layer_norm_backward_params") && err.to_string().contains("dgamma"), "{err}");
    }
}

#[test]
fn column_sums_are_bit_identical_across_runs() {
    let gpu = gpu();
    let first = check_backward(&gpu, &mut Rng::new(44), 1031, 129, true, true, true, false);
    let second = check_backward(&gpu, &mut Rng::new(44), 1031, 129, true, true, true, false);
    assert_eq!(
        first.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        second.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(
        first.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        second.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn more_rows_than_one_grid_dimension_holds() {
    // 70,001 rows: one workgroup per row folds into y past 65,535 (the GPU policy's kernels); the
    // column sums run in thousands of chunks.
    let gpu = Gpu::with_options(&GpuOptions { profile: ProfileOverride::Gpu, ..Default::default() }).unwrap();
    let mut rng = Rng::new(45);
    let (rows, cols) = (70_001, 3);
    let x = rows_of(&mut rng, rows, cols);
    let gamma = rng.vec_uniform(cols, 0.5, 2.0);
    let beta = rng.vec_uniform(cols, -1.0, 1.0);
    let [y, mean, rstd] = forward_gpu(&gpu, &x, Some(&gamma), Some(&beta), rows, cols);
    let (want_y, want_mean, want_rstd) =
        cpu::layer_norm_forward(&x, Some(&gamma), Some(&beta), rows, cols, LAYER_NORM_EPS);
    assert_close("mean", &mean, &want_mean, 1e-5, 1e-5);
    assert_close("rstd", &rstd, &want_rstd, 1e-5, 1e-4);
    assert_close("y", &y, &want_y, 1e-4, 1e-4);
    check_backward(&gpu, &mut rng, rows, cols, true, true, true, true);
}

#[test]
fn backward_reference_matches_finite_differences() {
    // f = Σ w ⊙ y with μ and σ² recomputed at every probe, so dx includes the paths through them.
    let mut rng = Rng::new(46);
    for &(rows, cols, has_gamma) in &[(1, 3, true), (3, 5, false), (4, 8, true), (2, 1, true)] {
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let gamma = has_gamma.then(|| rng.vec_uniform(cols, 0.5, 2.0));
        let beta = rng.vec_uniform(cols, -1.0, 1.0);
        let w = rng.vec_uniform(rows * cols, -1.0, 1.0);
        let eps = 1e-2; // with one column σ² = 0: a larger eps keeps f smooth to the probe step
        let f = |x: &[f32], gamma: Option<&[f32]>, beta: &[f32]| {
            dot(&w, &cpu::layer_norm_forward(x, gamma, Some(beta), rows, cols, eps).0)
        };
        let (_, mean, rstd) = cpu::layer_norm_forward(&x, gamma.as_deref(), Some(&beta), rows, cols, eps);
        let (dx, dgamma, dbeta) = cpu::layer_norm_backward(&w, &x, gamma.as_deref(), &mean, &rstd, rows, cols);
        let what = format!("{rows}x{cols} gamma={has_gamma}");
        let num_dx = numeric_gradient(&x, 1e-3, |xp| f(xp, gamma.as_deref(), &beta));
        assert_close(&format!("d/dx {what}"), &dx, &num_dx, 2e-3, 1e-2);
        let g = gamma.clone().unwrap_or_else(|| vec![1.0; cols]);
        let num_dg = numeric_gradient(&g, 1e-3, |gp| f(&x, Some(gp), &beta));
        assert_close(&format!("d/dgamma {what}"), &dgamma, &num_dg, 2e-3, 1e-2);
        let num_db = numeric_gradient(&beta, 1e-3, |bp| f(&x, gamma.as_deref(), bp));
        assert_close(&format!("d/dbeta {what}"), &dbeta, &num_db, 2e-3, 1e-2);
        // Each row of dx sums to 0: y does not move when the whole row shifts.
        for r in 0..rows {
            let s: f32 = dx[r * cols..(r + 1) * cols].iter().sum();
            assert!(s.abs() < 1e-4, "{what}: row {r} of dx sums to {s}");
        }
    }
}

#[test]
fn dx_with_an_addend_matches_cpu() {
    for (_, gpu) in both_policies() {
        let mut rng = Rng::new(47);
        for &rows in ROWS {
            for (i, &cols) in COLS.iter().enumerate() {
                let x = rows_of(&mut rng, rows, cols);
                let gamma = ((rows + i) % 3 != 2).then(|| rng.vec_uniform(cols, 0.5, 2.0));
                let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
                let addend = rng.vec_uniform(rows * cols, -1.0, 1.0);
                let (_, mean, rstd) = cpu::layer_norm_forward(&x, gamma.as_deref(), None, rows, cols, LAYER_NORM_EPS);
                let g = gamma.as_deref();
                let want = cpu::layer_norm_backward_dx_add(&dy, &x, g, &mean, &rstd, &addend, rows, cols);
                let shape = [rows, cols];
                let (xt, dyt, at, dxt) =
                    (t(&gpu, &shape, &x), t(&gpu, &shape, &dy), t(&gpu, &shape, &addend), t(&gpu, &shape, &dy));
                let (mt, st) = (t(&gpu, &[rows], &mean), t(&gpu, &[rows], &rstd));
                let gt = gamma.as_ref().map(|g| t(&gpu, &[cols], g));
                let plan = layer_norm_backward_dx_add(&gpu, &dyt, &xt, gt.as_ref(), &mt, &st, &at, &dxt).unwrap();
                assert_eq!(plan.len(), 1, "one dispatch");
                gpu.run(&[&plan]).unwrap();
                let what = format!(
                    "layer_norm_backward_dx_add {rows}x{cols} gamma={} {:?}",
                    g.is_some(),
                    gpu.profile().policy
                );
                assert_close(&what, &dxt.to_vec().unwrap(), &want, 1e-4, 1e-3);
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors_naming_the_kernel() {
    let gpu = gpu();
    let z = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let (x, y, mean, rstd, gamma) = (z(&[4, 3]), z(&[4, 3]), z(&[4]), z(&[4]), z(&[3]));
    let forward = |x: &Tensor, y: &Tensor, gamma: &Tensor, mean: &Tensor, eps: f32| {
        layer_norm_forward(&gpu, x, Some(gamma), None, y, mean, &rstd, eps).err()
    };
    assert!(forward(&x, &y, &gamma, &mean, LAYER_NORM_EPS).is_none());
    let err = forward(&x, &y, &z(&[4]), &mean, LAYER_NORM_EPS).expect("gamma of the wrong length");
    assert!(matches!(err, WgnnError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("layer_norm_forward") && err.to_string().contains("gamma"), "{err}");
    let err = forward(&x, &y, &gamma, &z(&[3]), LAYER_NORM_EPS).expect("mean per column, not per row");
    assert!(err.to_string().contains("mean") && err.to_string().contains("[4, 3]"), "{err}");
    let err = forward(&x, &z(&[3, 4]), &gamma, &mean, LAYER_NORM_EPS).expect("y of another shape");
    assert!(err.to_string().contains("[3, 4]"), "{err}");
    let err = forward(&x, &x, &gamma, &mean, LAYER_NORM_EPS).expect("in place");
    assert!(err.to_string().contains("share memory"), "{err}");
    for eps in [0.0, -1.0, f32::NAN] {
        let err = forward(&x, &y, &gamma, &mean, eps).expect("a bad eps");
        assert!(err.to_string().contains("layer_norm_forward") && err.to_string().contains("eps"), "{err}");
    }
    let err = forward(&z(&[12]), &y, &gamma, &mean, LAYER_NORM_EPS).expect("x must be 2-D");
    assert!(err.to_string().contains("layer_norm_forward"), "{err}");
    let err = layer_norm_backward(&gpu, &z(&[3, 4]), &x, None, &mean, &rstd, &y, None, Some(&gamma), false)
        .err()
        .expect("dy of another shape");
    assert!(err.to_string().contains("layer_norm_backward") && err.to_string().contains("[3, 4]"), "{err}");
    let err = layer_norm_backward(&gpu, &y, &x, None, &mean, &rstd, &z(&[4, 3]), Some(&z(&[4])), None, false)
        .err()
        .expect("dgamma of the wrong length");
    assert!(err.to_string().contains("dgamma"), "{err}");
    let add = |addend: &Tensor, dx: &Tensor| {
        layer_norm_backward_dx_add(&gpu, &y, &x, None, &mean, &rstd, addend, dx).err().expect("refused")
    };
    let err = add(&z(&[3, 4]), &z(&[4, 3]));
    assert!(err.to_string().contains("layer_norm_backward_dx_add") && err.to_string().contains("addend"), "{err}");
    let dx = z(&[4, 3]);
    let err = add(&dx, &dx);
    assert!(err.to_string().contains("share memory"), "{err}");
}
