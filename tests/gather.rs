//! gather.wgsl (with the step counters a training step's gather advances) and step_guard.wgsl
//! against the CPU reference.

mod common;
use common::*;
use wgnn::data::Features;
use wgnn::internals::cpu;
use wgnn::internals::kernels::gather::{gather_rows, BatchStart, GpuRows};
use wgnn::internals::kernels::step_guard::guard_step;
use wgnn::internals::rng::Rng;
use wgnn::{Tensor, WgnnError};

#[test]
fn gather_matches_cpu_for_u8_and_f32_sources() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    // Widths that are multiples of 4 take the u8x4 path (4-word groups: 12 and 20 end in a partial
    // group, 784 in whole ones); the others the per-feature one.
    for &(total, dim, rows) in &[
        (1, 1, 1),
        (10, 7, 3),
        (50, 4, 7),
        (40, 12, 5),
        (60, 20, 9),
        (100, 63, 64),
        (300, 65, 127),
        (1000, 257, 33),
        (200, 784, 32),
    ] {
        let bytes: Vec<u8> = (0..total * dim).map(|_| rng.below(256) as u8).collect();
        let labels: Vec<u32> = (0..total).map(|_| rng.below(10) as u32).collect();
        let mut idx: Vec<u32> = (0..total as u32).collect();
        rng.shuffle(&mut idx);
        let as_f32: Vec<f32> = bytes.iter().map(|&b| b as f32).collect();
        let mut mean_std = rng.vec_uniform(dim, -0.5, 0.5);
        mean_std.extend(rng.vec_uniform(dim, 0.5, 2.0));
        for source_u8 in [true, false] {
            for standardize in [false, true] {
                let features = if source_u8 { Features::U8(bytes.clone()) } else { Features::F32(as_f32.clone()) };
                let src = GpuRows {
                    scale: 1.0 / 255.0,
                    shift: -0.1,
                    mean_std: standardize.then(|| Tensor::from_slice(&gpu, &[2, dim], &mean_std).unwrap()),
                    ..GpuRows::upload(&gpu, &features, &labels, dim).unwrap()
                };
                let idx_t = Tensor::from_u32(&gpu, &[total], &idx).unwrap();
                // Batch 1 of the epoch, taken from the step counter's odd cell.
                let rows = rows.min(total);
                let step = if total >= 2 * rows { 1 } else { 0 };
                let epoch_step = Tensor::from_u32(&gpu, &[2], &[99, step as u32]).unwrap();
                let x = Tensor::zeros(&gpu, &[rows, dim]).unwrap();
                let y = Tensor::zeros_u32(&gpu, &[rows]).unwrap();
                let start = BatchStart::Counter { epoch_step: &epoch_step, stride: rows, parity: 1, t: None };
                let plan = gather_rows(&gpu, &src, &idx_t, start, &x, &y).unwrap();
                gpu.run(&[&plan]).unwrap();
                let ms = standardize.then_some(&mean_std[..]);
                let (want_x, want_y) =
                    cpu::gather_rows(&as_f32, &labels, dim, &idx, step * rows, rows, 1.0 / 255.0, -0.1, ms);
                let what = format!("gather {total}x{dim} rows {rows} u8={source_u8} std={standardize}");
                assert_close(&what, &x.to_vec().unwrap(), &want_x, 1e-6, 1e-5);
                assert_eq!(y.to_vec_u32().unwrap(), want_y, "{what}: labels");
                // It wrote the next position to the even cell.
                assert_eq!(epoch_step.to_vec_u32().unwrap(), vec![step as u32 + 1, step as u32], "{what}: counter");

                // The same rows from a fixed start.
                let plan = gather_rows(&gpu, &src, &idx_t, BatchStart::At(step * rows), &x, &y).unwrap();
                gpu.run(&[&plan]).unwrap();
                assert_close(&format!("{what} (fixed start)"), &x.to_vec().unwrap(), &want_x, 1e-6, 1e-5);
            }
        }
    }
}

#[test]
fn training_gathers_advance_the_step_counters_once_per_dispatch() {
    // Consecutive steps alternate parity, as fit records them: each reads its position from one
    // cell and writes the next to the other; t advances once per gather given it.
    let gpu = gpu();
    let (total, dim, rows) = (40, 8, 4);
    let features = Features::U8((0..total * dim).map(|i| (i % 251) as u8).collect());
    let labels: Vec<u32> = (0..total as u32).collect();
    let src = GpuRows::upload(&gpu, &features, &labels, dim).unwrap();
    let idx = Tensor::from_u32(&gpu, &[total], &labels).unwrap();
    let epoch_step = Tensor::from_u32(&gpu, &[2], &[0, 0]).unwrap();
    let t = Tensor::from_u32(&gpu, &[1], &[100]).unwrap();
    let (x, y) = (Tensor::zeros(&gpu, &[rows, dim]).unwrap(), Tensor::zeros_u32(&gpu, &[rows]).unwrap());
    let plans: Vec<_> = [0, 1]
        .map(|parity| {
            let start = BatchStart::Counter { epoch_step: &epoch_step, stride: rows, parity, t: Some(&t) };
            gather_rows(&gpu, &src, &idx, start, &x, &y).unwrap()
        })
        .into_iter()
        .collect();
    let (mut cells, mut t_want) = ([0u32; 2], 100u32);
    for step in 0..7 {
        gpu.run(&[&plans[step % 2]]).unwrap();
        let position = cpu::gather_counters(&mut cells, step % 2, Some(&mut t_want));
        assert_eq!(position, step as u32, "the reference reads step {step}'s position");
        let want_y: Vec<u32> = (0..rows as u32).map(|r| step as u32 * rows as u32 + r).collect();
        assert_eq!(y.to_vec_u32().unwrap(), want_y, "step {step}: its own batch");
        assert_eq!(epoch_step.to_vec_u32().unwrap(), cells.to_vec(), "step {step}: position cells");
        assert_eq!(t.to_vec_u32().unwrap(), vec![t_want], "step {step}: t");
    }
    assert_eq!((cells[1], t_want), (7, 107));
    // The counters are checked.
    let one_cell = Tensor::zeros_u32(&gpu, &[1]).unwrap();
    let start = BatchStart::Counter { epoch_step: &one_cell, stride: rows, parity: 0, t: None };
    let err = gather_rows(&gpu, &src, &idx, start, &x, &y).err().expect("a one-cell counter must fail");
    assert!(err.to_string().contains("epoch_step"), "{err}");
    let start = BatchStart::Counter { epoch_step: &epoch_step, stride: rows, parity: 2, t: None };
    let err = gather_rows(&gpu, &src, &idx, start, &x, &y).err().expect("parity 2 must fail");
    assert!(err.to_string().contains("parity"), "{err}");
}

#[test]
fn gather_rejects_bad_shapes() {
    let gpu = gpu();
    let src = GpuRows::upload(&gpu, &Features::U8(vec![0; 16]), &[0; 4], 4).unwrap();
    let idx = Tensor::from_u32(&gpu, &[4], &[0, 1, 2, 3]).unwrap();
    let y = Tensor::zeros_u32(&gpu, &[2]).unwrap();
    let wide = Tensor::zeros(&gpu, &[2, 5]).unwrap();
    let err = gather_rows(&gpu, &src, &idx, BatchStart::At(0), &wide, &y).err().expect("wrong width must fail");
    assert!(
        matches!(err, WgnnError::Shape { .. })
            && err.to_string().contains("gather_rows")
            && err.to_string().contains("[2, 5]"),
        "{err}"
    );
    let x = Tensor::zeros(&gpu, &[2, 4]).unwrap();
    let err = gather_rows(&gpu, &src, &idx, BatchStart::At(3), &x, &y).err().expect("past the end must fail");
    assert!(err.to_string().contains("gather_rows"), "{err}");
    let float_idx = Tensor::zeros(&gpu, &[4]).unwrap();
    let err = gather_rows(&gpu, &src, &float_idx, BatchStart::At(0), &x, &y).err().expect("f32 indices must fail");
    assert!(matches!(err, WgnnError::DType { .. }), "{err}");
}

#[test]
fn guard_step_counts_finite_batches_and_flags_the_others() {
    let gpu = gpu();
    let counters = Tensor::from_u32(&gpu, &[2], &[10, 0]).unwrap();
    let batch_totals = Tensor::zeros(&gpu, &[2]).unwrap();
    let totals = Tensor::from_slice(&gpu, &[4], &[1.5, 2.0, 0.0, 0.0]).unwrap();
    let plan = guard_step(&gpu, &counters, &batch_totals, &totals, 32).unwrap();
    let (mut c, mut t) = ([10u32, 0], [1.5f32, 2.0, 0.0, 0.0]);
    // A finite batch, three kinds of non-finite one, then a finite one again.
    for sums in [[0.75, 30.0], [f32::NAN, 12.0], [f32::INFINITY, 1.0], [f32::NEG_INFINITY, 0.0], [2.0, 31.0]] {
        batch_totals.write(&sums).unwrap();
        gpu.run(&[&plan]).unwrap();
        let mut b = sums;
        cpu::guard_step(&mut c, &mut b, &mut t, 32);
        assert_eq!(counters.to_vec_u32().unwrap(), c.to_vec(), "{sums:?}");
        assert_eq!(batch_totals.to_vec().unwrap(), b.to_vec(), "{sums:?}");
        assert_eq!(totals.to_vec().unwrap(), t.to_vec(), "{sums:?}");
    }
    // Two finite batches counted (t 10 → 12), three skipped with their 96 rows, the flag cleared.
    assert_eq!((c, t), ([12, 0], [1.5 + 0.75 + 2.0, 2.0 + 30.0 + 31.0, 3.0, 96.0]));
    // Shapes are checked.
    let three = Tensor::zeros_u32(&gpu, &[3]).unwrap();
    let err = guard_step(&gpu, &three, &batch_totals, &totals, 32).err().unwrap();
    assert!(err.to_string().contains("counters"), "{err}");
}
