//! optimizer.wgsl's SGD and Adam against the CPU reference over several steps, and the reference
//! against the update rules written out by hand; bad hyper-parameters and tensors. AdamW,
//! RMSprop, Adagrad, Adadelta and the learning-rate schedules: tests/optimizer_rules.rs.

mod common;
use common::optimizer_checks::*;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::optimizer::{
    adam_update, sgd_update, AdamConfig, DecayMask, EpsPlacement, LrSchedule, SgdConfig,
};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, GpuOptions, Tensor};

fn sgd_configs() -> Vec<SgdConfig> {
    let base =
        SgdConfig { lr: 0.05, momentum: 0.0, nesterov: false, weight_decay: 0.0, schedule: LrSchedule::Constant };
    vec![
        base,
        SgdConfig { weight_decay: 0.01, ..base },
        SgdConfig { momentum: 0.9, ..base },
        SgdConfig { momentum: 0.9, nesterov: true, ..base },
        SgdConfig { momentum: 0.5, nesterov: true, weight_decay: 0.1, lr: 0.3, schedule: LrSchedule::Constant },
    ]
}

fn adam_configs() -> Vec<AdamConfig> {
    let base = AdamConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        schedule: LrSchedule::Constant,
        eps_placement: EpsPlacement::Torch,
        decay: DecayMask::All,
    };
    vec![
        base,
        AdamConfig { weight_decay: 0.05, lr: 0.01, ..base },
        AdamConfig { beta1: 0.0, beta2: 0.5, eps: 1e-3, ..base },
    ]
}

/// Runs `STEPS` SGD steps on the GPU and the CPU with fresh gradients each step.
/// Runs STEPS updates against the reference; returns the dispatch's grid.
fn check_sgd(gpu: &Gpu, rng: &mut Rng, len: usize, cfg: &SgdConfig) -> [u32; 3] {
    let what = format!("sgd_update len {len} {cfg:?}");
    let mut p = rng.vec_uniform(len, -1.0, 1.0);
    let mut vel = vec![0.0f32; len];
    let pt = Tensor::from_slice(gpu, &[len], &p).unwrap();
    let gt = Tensor::zeros(gpu, &[len]).unwrap();
    let vt = Tensor::zeros(gpu, &[len]).unwrap();
    let with_vel = cfg.momentum != 0.0;
    let plan = sgd_update(gpu, &pt, &gt, with_vel.then_some(&vt), cfg).unwrap();
    assert_family(&plan, len, &what);
    for _ in 0..STEPS {
        let g = rng.vec_uniform(len, -1.0, 1.0);
        gt.write(&g).unwrap();
        gpu.run(&[&plan]).unwrap();
        cpu::sgd_update(&mut p, &g, with_vel.then_some(&mut vel[..]), cfg);
    }
    assert_close(&format!("{what} param"), &pt.to_vec().unwrap(), &p, 1e-5, 1e-5);
    if with_vel {
        assert_close(&format!("{what} velocity"), &vt.to_vec().unwrap(), &vel, 1e-5, 1e-5);
    }
    plan.dispatches[0].workgroups
}

#[test]
fn sgd_matches_cpu_over_steps() {
    let gpu = gpu();
    let mut rng = Rng::new(20);
    for cfg in sgd_configs() {
        for &len in SIZES.iter().chain(VEC4_SIZES).chain(&[100_003, 100_000]) {
            check_sgd(&gpu, &mut rng, len, &cfg);
        }
    }
}

#[test]
fn sgd_grid_folds_past_the_workgroup_limit() {
    // More workgroups than one grid dimension holds, so the grid folds into y: on a device that
    // allows 64 per dimension (each workgroup covers 256 invocations × 4 values of f32 or vec4).
    let options =
        GpuOptions { limits: |l| wgpu::Limits { max_compute_workgroups_per_dimension: 64, ..l }, ..Default::default() };
    let gpu = Gpu::with_options(&options).unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let mut rng = Rng::new(21);
    // 257 workgroups of scalars (odd length), then 129 of vec4s.
    for len in [64 * 256 * 4 * 4 + 1001, 64 * 256 * 16 * 2 + 1000] {
        let grid = check_sgd(
            &gpu,
            &mut rng,
            len,
            &SgdConfig { lr: 0.5, momentum: 0.0, nesterov: false, weight_decay: 0.0, schedule: LrSchedule::Constant },
        );
        assert!(grid[0] == 64 && grid[1] > 1, "len {len}: grid {grid:?} should fold into y");
    }
}

#[test]
fn adam_matches_cpu_over_steps_with_views() {
    // Every tensor is a view into a larger buffer, param and grad share one (as do m and v), and
    // the step is one element of a u32 state buffer written between runs.
    let gpu = gpu();
    let align = gpu.limits().min_storage_buffer_offset_alignment as usize / 4;
    let mut rng = Rng::new(22);
    for cfg in adam_configs() {
        for &len in SIZES.iter().chain(VEC4_SIZES).chain(&[100_003, 100_000]) {
            let what = format!("adam_update len {len} {cfg:?}");
            let at = len.next_multiple_of(align) + align;
            let params_buf = Tensor::zeros(&gpu, &[at + len + 3]).unwrap();
            let state_buf = Tensor::zeros(&gpu, &[2 * at + len]).unwrap();
            let counters = Tensor::zeros_u32(&gpu, &[3 * align]).unwrap();
            let pt = params_buf.view(0, &[len]).unwrap();
            let gt = params_buf.view(at, &[len]).unwrap();
            let mt = state_buf.view(at, &[len]).unwrap();
            let vt = state_buf.view(2 * at, &[len]).unwrap();
            let step = counters.view(align, &[1]).unwrap();
            let mut p = rng.vec_uniform(len, -1.0, 1.0);
            let (mut m, mut v) = (vec![0.0f32; len], vec![0.0f32; len]);
            pt.write(&p).unwrap();
            let plan = adam_update(&gpu, &pt, &gt, &mt, &vt, &step, &cfg).unwrap();
            assert_family(&plan, len, &what);
            for t in 1..=STEPS {
                let g = rng.vec_uniform(len, -1.0, 1.0);
                gt.write(&g).unwrap();
                step.write_u32(&[t]).unwrap();
                gpu.run(&[&plan]).unwrap();
                cpu::adam_update(&mut p, &g, &mut m, &mut v, t, &cfg);
            }
            assert_close(&format!("{what} param"), &pt.to_vec().unwrap(), &p, 1e-5, 1e-4);
            assert_close(&format!("{what} m"), &mt.to_vec().unwrap(), &m, 1e-6, 1e-4);
            assert_close(&format!("{what} v"), &vt.to_vec().unwrap(), &v, 1e-6, 1e-4);
            assert_eq!(step.to_vec_u32().unwrap(), [STEPS], "{what}: the kernel must not write the step");
        }
    }
}

#[test]
fn sgd_reference_matches_hand_written_rule() {
    let grads = [0.5f64, -0.25, 1.0];
    let (lr, mu, wd) = (0.1f64, 0.9f64, 0.01f64);
    for nesterov in [false, true] {
        let cfg = SgdConfig {
            lr: lr as f32,
            momentum: mu as f32,
            nesterov,
            weight_decay: wd as f32,
            schedule: LrSchedule::Constant,
        };
        let (mut p, mut vel) = ([1.0f32], [0.0f32]);
        // By hand: d = g + wd·p; buf = d on step 1, then μ·buf + d; step = nesterov ? d + μ·buf : buf.
        let mut hp = 1.0f64;
        let mut buf = 0.0f64;
        for (k, &g) in grads.iter().enumerate() {
            cpu::sgd_update(&mut p, &[g as f32], Some(&mut vel), &cfg);
            let d = g + wd * hp;
            buf = if k == 0 { d } else { mu * buf + d };
            let s = if nesterov { d + mu * buf } else { buf };
            hp -= lr * s;
            assert_close(&format!("sgd nesterov={nesterov} step {}", k + 1), &p, &[hp as f32], 1e-6, 1e-6);
            assert_close(&format!("sgd nesterov={nesterov} velocity {}", k + 1), &vel, &[buf as f32], 1e-6, 1e-6);
        }
    }
    // Plain SGD, three steps: p = 1 − 0.1·(0.5 + 0.01·p) ... written out.
    let cfg = SgdConfig { lr: 0.1, momentum: 0.0, nesterov: false, weight_decay: 0.01, schedule: LrSchedule::Constant };
    let mut p = [1.0f32];
    let p1 = 1.0 - 0.1 * (0.5 + 0.01 * 1.0);
    let p2 = p1 - 0.1 * (-0.25 + 0.01 * p1);
    let p3 = p2 - 0.1 * (1.0 + 0.01 * p2);
    for (g, want) in grads.iter().zip([p1, p2, p3]) {
        cpu::sgd_update(&mut p, &[*g as f32], None, &cfg);
        assert_close("plain sgd", &p, &[want as f32], 1e-6, 1e-6);
    }
}

#[test]
fn adam_reference_matches_hand_written_rule() {
    let grads = [0.5f64, -0.25, 1.0];
    let cfg = AdamConfig {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
        schedule: LrSchedule::Constant,
        eps_placement: EpsPlacement::Torch,
        decay: DecayMask::All,
    };
    // The same hyper-parameters in f64: 0.999 is not exact in f32, and 1 − β2 then differs from
    // 0.001 by 5e-5 relative.
    let (lr, b1, b2, eps, wd) =
        (cfg.lr as f64, cfg.beta1 as f64, cfg.beta2 as f64, cfg.eps as f64, cfg.weight_decay as f64);
    let (mut p, mut m, mut v) = ([2.0f32], [0.0f32], [0.0f32]);
    let (mut hp, mut hm, mut hv) = (2.0f64, 0.0f64, 0.0f64);
    for (k, &g) in grads.iter().enumerate() {
        let t = k as i32 + 1;
        cpu::adam_update(&mut p, &[g as f32], &mut m, &mut v, t as u32, &cfg);
        let d = g + wd * hp;
        hm = b1 * hm + (1.0 - b1) * d;
        hv = b2 * hv + (1.0 - b2) * d * d;
        let m_hat = hm / (1.0 - b1.powi(t));
        let v_hat = hv / (1.0 - b2.powi(t));
        hp -= lr * m_hat / (v_hat.sqrt() + eps);
        assert_close(&format!("adam step {t} param"), &p, &[hp as f32], 1e-6, 1e-5);
        assert_close(&format!("adam step {t} m"), &m, &[hm as f32], 1e-7, 1e-5);
        assert_close(&format!("adam step {t} v"), &v, &[hv as f32], 1e-9, 1e-5);
    }
    // Step 1 of Adam moves each parameter by about lr·sign(g), whatever |g|.
    let (mut p, mut m, mut v) = ([0.0f32], [0.0f32], [0.0f32]);
    cpu::adam_update(&mut p, &[123.0], &mut m, &mut v, 1, &AdamConfig { weight_decay: 0.0, ..cfg });
    assert_close("adam first step", &p, &[-0.01], 1e-7, 1e-5);
}

#[test]
fn sgd_bad_input_is_an_error_naming_the_kernel() {
    let gpu = gpu();
    let p = Tensor::zeros(&gpu, &[10]).unwrap();
    let g = Tensor::zeros(&gpu, &[10]).unwrap();
    let vel = Tensor::zeros(&gpu, &[10]).unwrap();
    let ok = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: false, weight_decay: 0.0, schedule: LrSchedule::Constant };
    sgd_update(&gpu, &p, &g, Some(&vel), &ok).expect("valid call");
    let k = "sgd_update";
    for (what, cfg, field) in [
        ("lr 0", SgdConfig { lr: 0.0, ..ok }, "lr"),
        ("lr NaN", SgdConfig { lr: f32::NAN, ..ok }, "lr"),
        ("lr inf", SgdConfig { lr: f32::INFINITY, ..ok }, "lr"),
        ("momentum 1", SgdConfig { momentum: 1.0, ..ok }, "momentum"),
        ("momentum < 0", SgdConfig { momentum: -0.1, ..ok }, "momentum"),
        ("weight_decay < 0", SgdConfig { weight_decay: -1.0, ..ok }, "weight_decay"),
    ] {
        expect_err(what, sgd_update(&gpu, &p, &g, Some(&vel), &cfg), &[k, field]);
    }
    let plain = SgdConfig { momentum: 0.0, ..ok };
    expect_err(
        "nesterov without momentum",
        sgd_update(&gpu, &p, &g, None, &SgdConfig { nesterov: true, ..plain }),
        &[k, "nesterov"],
    );
    expect_err("missing velocity", sgd_update(&gpu, &p, &g, None, &ok), &[k, "velocity"]);
    expect_err("velocity without momentum", sgd_update(&gpu, &p, &g, Some(&vel), &plain), &[k, "velocity"]);
    let short = Tensor::zeros(&gpu, &[9]).unwrap();
    expect_err("grad length", sgd_update(&gpu, &p, &short, None, &plain), &[k, "grad", "[9]"]);
    expect_err("velocity length", sgd_update(&gpu, &p, &g, Some(&short), &ok), &[k, "velocity", "[9]"]);
    expect_err("param is grad", sgd_update(&gpu, &p, &p, None, &plain), &[k, "share memory"]);
    expect_err("velocity is grad", sgd_update(&gpu, &p, &g, Some(&g), &ok), &[k, "share memory"]);
    let empty = Tensor::zeros(&gpu, &[0]).unwrap();
    expect_err("empty", sgd_update(&gpu, &empty, &empty, None, &plain), &[k, "empty"]);
    let pu = Tensor::zeros_u32(&gpu, &[10]).unwrap();
    expect_err("u32 param", sgd_update(&gpu, &pu, &g, None, &plain), &[k, "f32", "u32"]);
    expect_err("u32 grad", sgd_update(&gpu, &p, &pu, None, &plain), &[k, "f32", "u32"]);
}

#[test]
fn adam_bad_input_is_an_error_naming_the_kernel() {
    let gpu = gpu();
    let [p, g, m, v] = [(); 4].map(|_| Tensor::zeros(&gpu, &[10]).unwrap());
    let step = Tensor::from_u32(&gpu, &[1], &[1]).unwrap();
    let ok = AdamConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        schedule: LrSchedule::Constant,
        eps_placement: EpsPlacement::Torch,
        decay: DecayMask::All,
    };
    adam_update(&gpu, &p, &g, &m, &v, &step, &ok).expect("valid call");
    let k = "adam_update";
    for (what, cfg, field) in [
        ("lr 0", AdamConfig { lr: 0.0, ..ok }, "lr"),
        ("lr < 0", AdamConfig { lr: -1e-3, ..ok }, "lr"),
        ("lr NaN", AdamConfig { lr: f32::NAN, ..ok }, "lr"),
        ("beta1 1", AdamConfig { beta1: 1.0, ..ok }, "beta1"),
        ("beta1 < 0", AdamConfig { beta1: -0.5, ..ok }, "beta1"),
        ("beta2 1", AdamConfig { beta2: 1.0, ..ok }, "beta2"),
        ("beta2 NaN", AdamConfig { beta2: f32::NAN, ..ok }, "beta2"),
        ("eps 0", AdamConfig { eps: 0.0, ..ok }, "eps"),
        ("weight_decay inf", AdamConfig { weight_decay: f32::INFINITY, ..ok }, "weight_decay"),
    ] {
        expect_err(what, adam_update(&gpu, &p, &g, &m, &v, &step, &cfg), &[k, field]);
    }
    let short = Tensor::zeros(&gpu, &[11]).unwrap();
    expect_err("grad length", adam_update(&gpu, &p, &short, &m, &v, &step, &ok), &[k, "grad", "[11]"]);
    expect_err("m length", adam_update(&gpu, &p, &g, &short, &v, &step, &ok), &[k, "m must", "[11]"]);
    expect_err("v length", adam_update(&gpu, &p, &g, &m, &short, &step, &ok), &[k, "v must", "[11]"]);
    let f32_step = Tensor::zeros(&gpu, &[1]).unwrap();
    expect_err("f32 step", adam_update(&gpu, &p, &g, &m, &v, &f32_step, &ok), &[k, "u32"]);
    // [t] or the guarded [t, skip]; nothing else.
    let three_steps = Tensor::zeros_u32(&gpu, &[3]).unwrap();
    expect_err("step [3]", adam_update(&gpu, &p, &g, &m, &v, &three_steps, &ok), &[k, "step", "[1] or [2]"]);
    expect_err("m is v", adam_update(&gpu, &p, &g, &m, &m, &step, &ok), &[k, "share memory"]);
    let align = gpu.limits().min_storage_buffer_offset_alignment as usize / 4;
    let big = Tensor::zeros(&gpu, &[4 * align]).unwrap();
    let [a, b] = [0, align].map(|at| big.view(at, &[align + 1]).unwrap());
    let [p, g] = [(); 2].map(|_| Tensor::zeros(&gpu, &[align + 1]).unwrap());
    expect_err("overlapping views", adam_update(&gpu, &p, &g, &a, &b, &step, &ok), &[k, "share memory"]);
    let empty = Tensor::zeros(&gpu, &[0]).unwrap();
    expect_err("empty", adam_update(&gpu, &empty, &empty, &empty, &empty, &step, &ok), &[k, "empty"]);
}
