//! positional.wgsl (with reduce.wgsl's column sum for the backward) against the CPU reference:
//! blocks shorter than the table, batches of 1 to past one reduction chunk, the rows the batch
//! did not use, finite differences of the reference, determinism, bad arguments.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::positional::{positional_add_backward, positional_add_forward};
use wgnn::internals::rng::Rng;
use wgnn::{Tensor, WgnnError};

/// (batch, block, block_max, cols)
const CASES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 1, 1),
    (7, 3, 5, 3),
    (1, 64, 64, 65),
    (12, 64, 64, 129),
    (3, 7, 256, 384),
    (1031, 2, 9, 3),
    (5000, 1, 2, 5),
];

#[test]
fn forward_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(61);
    for &(batch, block, block_max, cols) in CASES {
        let x = rng.vec_uniform(batch * block * cols, -1.0, 1.0);
        let pos = rng.vec_uniform(block_max * cols, -1.0, 1.0);
        let xt = Tensor::from_slice(&gpu, &[batch, block, cols], &x).unwrap();
        let pt = Tensor::from_slice(&gpu, &[block_max, cols], &pos).unwrap();
        let out = Tensor::zeros(&gpu, &[batch, block, cols]).unwrap();
        gpu.run(&[&positional_add_forward(&gpu, &xt, &pt, &out).unwrap()]).unwrap();
        let want = cpu::positional_add_forward(&x, &pos, batch, block, cols);
        assert_close(
            &format!("positional_add_forward {batch}x{block}x{cols} of {block_max}"),
            &out.to_vec().unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn backward_matches_cpu_and_repeats_bit_for_bit() {
    let gpu = gpu();
    let mut rng = Rng::new(62);
    for (i, &(batch, block, block_max, cols)) in CASES.iter().enumerate() {
        let accumulate = i % 2 == 1;
        let dy = rng.vec_uniform(batch * block * cols, -1.0, 1.0);
        let start = rng.vec_uniform(block_max * cols, -1.0, 1.0);
        let dyt = Tensor::from_slice(&gpu, &[batch, block, cols], &dy).unwrap();
        let run = || {
            let dpos = Tensor::from_slice(&gpu, &[block_max, cols], &start).unwrap();
            gpu.run(&[&positional_add_backward(&gpu, &dyt, &dpos, accumulate).unwrap()]).unwrap();
            dpos.to_vec().unwrap()
        };
        let (got, again) = (run(), run());
        let sums = cpu::positional_add_backward(&dy, batch, block, block_max, cols);
        // Rows past the block keep their gradient when accumulating, and are zero otherwise.
        let want: Vec<f32> = match accumulate {
            true => sums.iter().zip(&start).map(|(s, a)| s + a).collect(),
            false => sums,
        };
        let what = format!("positional_add_backward {batch}x{block}x{cols} of {block_max} accumulate={accumulate}");
        assert_close(&what, &got, &want, 1e-6 * batch as f32, 1e-5);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            again.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{what}: two runs differ"
        );
    }
}

#[test]
fn backward_reference_matches_finite_differences() {
    let mut rng = Rng::new(63);
    let (batch, block, block_max, cols) = (3, 2, 4, 3);
    let x = rng.vec_uniform(batch * block * cols, -1.0, 1.0);
    let pos = rng.vec_uniform(block_max * cols, -1.0, 1.0);
    let w = rng.vec_uniform(batch * block * cols, -1.0, 1.0);
    let num_dpos = numeric_gradient(&pos, 1e-2, |pp| dot(&w, &cpu::positional_add_forward(&x, pp, batch, block, cols)));
    let dpos = cpu::positional_add_backward(&w, batch, block, block_max, cols);
    assert_close("d/dpos", &dpos, &num_dpos, 1e-4, 1e-3);
    // dx = dy: the forward is x plus a constant.
    let num_dx = numeric_gradient(&x, 1e-2, |xp| dot(&w, &cpu::positional_add_forward(xp, &pos, batch, block, cols)));
    assert_close("d/dx", &w, &num_dx, 1e-4, 1e-3);
}

#[test]
fn bad_arguments_are_errors_naming_the_kernel() {
    let gpu = gpu();
    let z = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let (x, out) = (z(&[2, 5, 3]), z(&[2, 5, 3]));
    positional_add_forward(&gpu, &x, &z(&[8, 3]), &out).expect("a good call");
    let err = positional_add_forward(&gpu, &x, &z(&[4, 3]), &out).err().expect("a block longer than the table");
    assert!(matches!(err, WgnnError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("positional_add_forward") && err.to_string().contains("[4, 3]"), "{err}");
    let err = positional_add_forward(&gpu, &x, &z(&[8, 4]), &out).err().expect("another width");
    assert!(err.to_string().contains("[8, 4]"), "{err}");
    let err = positional_add_forward(&gpu, &z(&[10, 3]), &z(&[8, 3]), &out).err().expect("x of rank 2");
    assert!(err.to_string().contains("[batch, block, cols]"), "{err}");
    let err = positional_add_forward(&gpu, &x, &z(&[8, 3]), &z(&[5, 2, 3])).err().expect("out of another shape");
    assert!(err.to_string().contains("out"), "{err}");
    let err = positional_add_forward(&gpu, &x, &z(&[8, 3]), &x).err().expect("in place");
    assert!(err.to_string().contains("share memory"), "{err}");
    let err = positional_add_backward(&gpu, &x, &z(&[3, 3]), false).err().expect("dpos too short");
    assert!(err.to_string().contains("positional_add_backward") && err.to_string().contains("dpos"), "{err}");
}
