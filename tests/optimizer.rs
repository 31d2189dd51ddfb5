//! optimizer.wgsl (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta; learning-rate schedules) against the
//! CPU reference over several steps, and the reference against the update rules written out by
//! hand; bad hyper-parameters and tensors.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::optimizer::{
    adam_update, sgd_update, AdamConfig, DecayMask, EpsPlacement, LrSchedule, SgdConfig,
};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, GpuOptions, Tensor};

const STEPS: u32 = 5;

/// Lengths that take the vec4 kernels (multiples of 4 floats, at 16-byte aligned offsets); the
/// shared SIZES mostly take the scalar ones.
const VEC4_SIZES: &[usize] = &[4, 60, 1028];

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

/// Checks that `plan` runs the vec4 module exactly where len is a multiple of 4 (every test tensor
/// sits at an offset that is a multiple of 16 bytes).
fn assert_family(plan: &wgnn::internals::kernels::Plan, len: usize, what: &str) {
    let family = plan.dispatches[0].label.split("::").next().unwrap();
    assert_eq!(family, if len.is_multiple_of(4) { "optimizer_vec4" } else { "optimizer" }, "{what}");
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

/// Asserts `result` is an error whose message contains every one of `needles`.
fn expect_err<T>(what: &str, result: wgnn::Result<T>, needles: &[&str]) {
    let msg = match result {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(msg.contains(n), "{what}: message {msg:?} does not contain {n:?}");
    }
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

// ---- AdamW, RMSprop, Adagrad, Adadelta; learning-rate schedules ----

use wgnn::internals::kernels::optimizer::{
    adadelta_update, adagrad_update, adamw_update, rmsprop_update, sgd_update_with_step, AdadeltaConfig, AdagradConfig,
    RmsPropConfig,
};

fn schedules() -> Vec<LrSchedule> {
    vec![
        LrSchedule::Constant,
        LrSchedule::Step { every: 2, gamma: 0.5 },
        LrSchedule::Exponential { decay_steps: 3, decay_rate: 0.8 },
        LrSchedule::Cosine { total_steps: 4, min_lr: 1e-3 },
        LrSchedule::WarmupCosine { warmup_steps: 2, total_steps: 5, min_lr: 1e-3 },
    ]
}

/// Which rule, with its config.
#[derive(Clone, Copy, Debug)]
enum Rule {
    AdamW(AdamConfig),
    RmsProp(RmsPropConfig),
    Adagrad(AdagradConfig),
    Adadelta(AdadeltaConfig),
}

/// Runs `STEPS` updates of `rule` on the GPU and the CPU with fresh gradients each step; the state
/// tensors are views of one buffer and t is written between runs.
fn check_rule(gpu: &Gpu, rng: &mut Rng, len: usize, rule: Rule) {
    let what = format!("len {len} {rule:?}");
    let align = gpu.limits().min_storage_buffer_offset_alignment as usize / 4;
    let at = len.next_multiple_of(align);
    let state_buf = Tensor::zeros(gpu, &[2 * at]).unwrap();
    let (s1t, s2t) = (state_buf.view(0, &[len]).unwrap(), state_buf.view(at, &[len]).unwrap());
    let mut p = rng.vec_uniform(len, -1.0, 1.0);
    let pt = Tensor::from_slice(gpu, &[len], &p).unwrap();
    let gt = Tensor::zeros(gpu, &[len]).unwrap();
    let step = Tensor::zeros_u32(gpu, &[1]).unwrap();
    let (mut s1, mut s2) = (vec![0.0f32; len], vec![0.0f32; len]);
    let plan = match rule {
        Rule::AdamW(c) => adamw_update(gpu, &pt, &gt, &s1t, &s2t, &step, &c),
        Rule::RmsProp(c) => rmsprop_update(gpu, &pt, &gt, &s1t, (c.momentum != 0.0).then_some(&s2t), Some(&step), &c),
        Rule::Adagrad(c) => adagrad_update(gpu, &pt, &gt, &s1t, &step, &c),
        Rule::Adadelta(c) => adadelta_update(gpu, &pt, &gt, &s1t, &s2t, Some(&step), &c),
    }
    .unwrap();
    assert_family(&plan, len, &what);
    for t in 1..=STEPS {
        let g = rng.vec_uniform(len, -1.0, 1.0);
        gt.write(&g).unwrap();
        step.write_u32(&[t]).unwrap();
        gpu.run(&[&plan]).unwrap();
        match rule {
            Rule::AdamW(c) => cpu::adamw_update(&mut p, &g, &mut s1, &mut s2, t, &c),
            Rule::RmsProp(c) => {
                cpu::rmsprop_update(&mut p, &g, &mut s1, (c.momentum != 0.0).then_some(&mut s2[..]), t, &c)
            }
            Rule::Adagrad(c) => cpu::adagrad_update(&mut p, &g, &mut s1, t, &c),
            Rule::Adadelta(c) => cpu::adadelta_update(&mut p, &g, &mut s1, &mut s2, t, &c),
        }
    }
    assert_close(&format!("{what} param"), &pt.to_vec().unwrap(), &p, 1e-5, 1e-4);
    assert_close(&format!("{what} state 1"), &s1t.to_vec().unwrap(), &s1, 1e-6, 1e-4);
    assert_close(&format!("{what} state 2"), &s2t.to_vec().unwrap(), &s2, 1e-6, 1e-4);
}

fn rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for schedule in schedules() {
        let adamw = AdamConfig {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            schedule,
            eps_placement: EpsPlacement::Torch,
            decay: DecayMask::All,
        };
        let rms = RmsPropConfig {
            lr: 0.01,
            rho: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            weight_decay: 0.0,
            schedule,
            eps_placement: EpsPlacement::Torch,
        };
        let ada = AdagradConfig {
            lr: 0.05,
            initial_accumulator: 0.1,
            eps: 1e-10,
            weight_decay: 0.0,
            schedule,
            eps_placement: EpsPlacement::Torch,
        };
        let delta = AdadeltaConfig { lr: 1.0, rho: 0.9, eps: 1e-6, weight_decay: 0.0, schedule };
        rules.extend([
            Rule::AdamW(adamw),
            Rule::AdamW(AdamConfig { beta1: 0.0, weight_decay: 0.5, ..adamw }),
            Rule::RmsProp(rms),
            Rule::RmsProp(RmsPropConfig { momentum: 0.9, weight_decay: 0.01, rho: 0.9, ..rms }),
            Rule::Adagrad(ada),
            Rule::Adagrad(AdagradConfig { initial_accumulator: 0.0, weight_decay: 0.1, ..ada }),
            Rule::Adadelta(delta),
            Rule::Adadelta(AdadeltaConfig { lr: 0.5, rho: 0.95, weight_decay: 0.05, ..delta }),
        ]);
    }
    rules
}

#[test]
fn new_optimizers_match_cpu_over_steps() {
    let gpu = gpu();
    let mut rng = Rng::new(70);
    for rule in rules() {
        for &len in SIZES.iter().chain(VEC4_SIZES).chain(&[10_007, 10_008]) {
            check_rule(&gpu, &mut rng, len, rule);
        }
    }
}

#[test]
fn scheduled_sgd_and_adam_match_cpu_over_steps() {
    let gpu = gpu();
    let mut rng = Rng::new(71);
    for schedule in schedules() {
        let cfg = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.01, schedule };
        let acfg = AdamConfig {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            schedule,
            eps_placement: EpsPlacement::Torch,
            decay: DecayMask::All,
        };
        for &len in &[1, 65, 257, 4, 260] {
            let mut p = rng.vec_uniform(len, -1.0, 1.0);
            let mut pa = p.clone();
            let (mut vel, mut m, mut v) = (vec![0.0f32; len], vec![0.0f32; len], vec![0.0f32; len]);
            let pt = Tensor::from_slice(&gpu, &[len], &p).unwrap();
            let pat = Tensor::from_slice(&gpu, &[len], &p).unwrap();
            let [gt, vt, mt, vvt] = [(); 4].map(|_| Tensor::zeros(&gpu, &[len]).unwrap());
            let step = Tensor::zeros_u32(&gpu, &[1]).unwrap();
            let plan = sgd_update_with_step(&gpu, &pt, &gt, Some(&vt), Some(&step), &cfg).unwrap();
            let aplan = adam_update(&gpu, &pat, &gt, &mt, &vvt, &step, &acfg).unwrap();
            for t in 1..=STEPS + 2 {
                let g = rng.vec_uniform(len, -1.0, 1.0);
                gt.write(&g).unwrap();
                step.write_u32(&[t]).unwrap();
                gpu.run(&[&plan, &aplan]).unwrap();
                cpu::sgd_update_with_step(&mut p, &g, Some(&mut vel), t, &cfg);
                cpu::adam_update(&mut pa, &g, &mut m, &mut v, t, &acfg);
            }
            assert_close(&format!("sgd {schedule:?} len {len}"), &pt.to_vec().unwrap(), &p, 1e-5, 1e-4);
            assert_close(&format!("adam {schedule:?} len {len}"), &pat.to_vec().unwrap(), &pa, 1e-5, 1e-4);
        }
    }
}

#[test]
fn gpu_uses_the_scheduled_lr_at_every_t() {
    // Plain SGD from p = 0 with g = 1 leaves p = −lr(t) exactly (lr·1, 0 − lr): the GPU's rate.
    let gpu = gpu();
    let base = 0.1f32;
    let p = Tensor::zeros(&gpu, &[3]).unwrap();
    let g = Tensor::from_slice(&gpu, &[3], &[1.0; 3]).unwrap();
    let step = Tensor::zeros_u32(&gpu, &[1]).unwrap();
    for schedule in schedules().into_iter().chain([
        LrSchedule::Step { every: 1, gamma: 0.9 },
        LrSchedule::Exponential { decay_steps: 1, decay_rate: 0.5 },
        LrSchedule::Cosine { total_steps: 10, min_lr: 0.0 },
    ]) {
        let cfg = SgdConfig { lr: base, momentum: 0.0, nesterov: false, weight_decay: 0.0, schedule };
        let plan = sgd_update_with_step(&gpu, &p, &g, None, Some(&step), &cfg).unwrap();
        for t in [0u32, 1, 2, 3, 4, 5, 7, 10, 11, 100, 1000] {
            p.write(&[0.0; 3]).unwrap();
            step.write_u32(&[t]).unwrap();
            gpu.run(&[&plan]).unwrap();
            let want = schedule.lr_at(base, t);
            let got = p.to_vec().unwrap().iter().map(|v| -v).collect::<Vec<f32>>();
            assert_close(&format!("{schedule:?} lr at t = {t}"), &got, &[want; 3], 1e-7, 1e-5);
        }
    }
}

#[test]
fn lr_at_matches_the_written_out_schedules() {
    let base = 0.1f64;
    let close = |what: &str, got: f32, want: f64| {
        assert!((got as f64 - want).abs() <= 1e-7 + 1e-6 * want.abs(), "{what}: {got} vs {want}");
    };
    for t in 0u32..=12 {
        let k = t.max(1) as f64 - 1.0;
        close("constant", LrSchedule::Constant.lr_at(0.1, t), base);
        // StepLR(step_size=3, gamma=0.5): 0.1 for k = 0..2, 0.05 for 3..5, ...
        let s = LrSchedule::Step { every: 3, gamma: 0.5 };
        close(&format!("step t={t}"), s.lr_at(0.1, t), base * 0.5f64.powi((k / 3.0).floor() as i32));
        let e = LrSchedule::Exponential { decay_steps: 4, decay_rate: 0.1 };
        close(&format!("exponential t={t}"), e.lr_at(0.1, t), base * 0.1f64.powf(k / 4.0));
        let c = LrSchedule::Cosine { total_steps: 8, min_lr: 0.01 };
        let kk = k.min(8.0);
        let want = 0.01 + (base - 0.01) * 0.5 * (1.0 + (std::f64::consts::PI * kk / 8.0).cos());
        close(&format!("cosine t={t}"), c.lr_at(0.1, t), want);
    }
    // Landmarks: update 1 is the base rate; cosine reaches min_lr at k = T and stays; the
    // exponential has decayed by one rate after decay_steps updates.
    close("cosine end", LrSchedule::Cosine { total_steps: 8, min_lr: 0.01 }.lr_at(0.1, 9), 0.01);
    close("cosine after", LrSchedule::Cosine { total_steps: 8, min_lr: 0.01 }.lr_at(0.1, 50), 0.01);
    close("cosine half", LrSchedule::Cosine { total_steps: 8, min_lr: 0.0 }.lr_at(0.1, 5), 0.05);
    close("exp one period", LrSchedule::Exponential { decay_steps: 4, decay_rate: 0.1 }.lr_at(0.1, 5), 0.01);
}

#[test]
fn new_references_match_hand_written_rules() {
    let grads = [0.5f64, -0.25, 1.0, 0.125, -2.0];
    // AdamW: p ← p − lr·wd·p, then Adam without L2.
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
    let (lr, b1, b2, eps, wd) =
        (cfg.lr as f64, cfg.beta1 as f64, cfg.beta2 as f64, cfg.eps as f64, cfg.weight_decay as f64);
    let (mut p, mut m, mut v) = ([2.0f32], [0.0f32], [0.0f32]);
    let (mut hp, mut hm, mut hv) = (2.0f64, 0.0f64, 0.0f64);
    for (k, &g) in grads.iter().enumerate() {
        let t = k as i32 + 1;
        cpu::adamw_update(&mut p, &[g as f32], &mut m, &mut v, t as u32, &cfg);
        hp -= lr * wd * hp;
        hm = b1 * hm + (1.0 - b1) * g;
        hv = b2 * hv + (1.0 - b2) * g * g;
        hp -= lr * (hm / (1.0 - b1.powi(t))) / ((hv / (1.0 - b2.powi(t))).sqrt() + eps);
        assert_close(&format!("adamw step {t}"), &p, &[hp as f32], 1e-6, 1e-5);
    }

    // RMSprop with momentum and L2: sq = ρ·sq + (1−ρ)g²; buf = μ·buf + g/(√sq + eps); p −= lr·buf.
    let cfg = RmsPropConfig {
        lr: 0.01,
        rho: 0.9,
        eps: 1e-8,
        momentum: 0.5,
        weight_decay: 0.1,
        schedule: LrSchedule::Constant,
        eps_placement: EpsPlacement::Torch,
    };
    let (lr, rho, eps, mu, wd) = (0.01f64, cfg.rho as f64, 1e-8f64, 0.5f64, cfg.weight_decay as f64);
    let (mut p, mut sq, mut buf) = ([1.0f32], [0.0f32], [0.0f32]);
    let (mut hp, mut hsq, mut hbuf) = (1.0f64, 0.0f64, 0.0f64);
    for (k, &g) in grads.iter().enumerate() {
        cpu::rmsprop_update(&mut p, &[g as f32], &mut sq, Some(&mut buf), k as u32 + 1, &cfg);
        let d = g + wd * hp;
        hsq = rho * hsq + (1.0 - rho) * d * d;
        hbuf = mu * hbuf + d / (hsq.sqrt() + eps);
        hp -= lr * hbuf;
        assert_close(&format!("rmsprop step {}", k + 1), &p, &[hp as f32], 1e-6, 1e-5);
        assert_close(&format!("rmsprop sq {}", k + 1), &sq, &[hsq as f32], 1e-8, 1e-5);
    }

    // Adagrad: sum = init + Σ g²; p −= lr·g/(√sum + eps). The state tensor's contents before
    // update 1 do not matter.
    let cfg = AdagradConfig {
        lr: 0.1,
        initial_accumulator: 0.1,
        eps: 1e-10,
        weight_decay: 0.0,
        schedule: LrSchedule::Constant,
        eps_placement: EpsPlacement::Torch,
    };
    let (mut p, mut sum) = ([1.0f32], [123.0f32]);
    let (mut hp, mut hsum) = (1.0f64, cfg.initial_accumulator as f64);
    for (k, &g) in grads.iter().enumerate() {
        cpu::adagrad_update(&mut p, &[g as f32], &mut sum, k as u32 + 1, &cfg);
        hsum += g * g;
        hp -= 0.1 * g / (hsum.sqrt() + 1e-10);
        assert_close(&format!("adagrad step {}", k + 1), &p, &[hp as f32], 1e-6, 1e-5);
        assert_close(&format!("adagrad sum {}", k + 1), &sum, &[hsum as f32], 1e-7, 1e-6);
    }

    // Adadelta: v = ρv + (1−ρ)g²; δ = √(u + eps)/√(v + eps)·g; u = ρu + (1−ρ)δ²; p −= lr·δ.
    let cfg = AdadeltaConfig { lr: 1.0, rho: 0.9, eps: 1e-6, weight_decay: 0.0, schedule: LrSchedule::Constant };
    let (rho, eps) = (cfg.rho as f64, cfg.eps as f64);
    let (mut p, mut sv, mut su) = ([1.0f32], [0.0f32], [0.0f32]);
    let (mut hp, mut hv, mut hu) = (1.0f64, 0.0f64, 0.0f64);
    for (k, &g) in grads.iter().enumerate() {
        cpu::adadelta_update(&mut p, &[g as f32], &mut sv, &mut su, k as u32 + 1, &cfg);
        hv = rho * hv + (1.0 - rho) * g * g;
        let delta = (hu + eps).sqrt() / (hv + eps).sqrt() * g;
        hu = rho * hu + (1.0 - rho) * delta * delta;
        hp -= delta;
        assert_close(&format!("adadelta step {}", k + 1), &p, &[hp as f32], 1e-6, 1e-4);
        assert_close(&format!("adadelta u {}", k + 1), &su, &[hu as f32], 1e-9, 1e-4);
    }
}

#[test]
fn new_optimizers_bad_input_is_an_error_naming_the_kernel() {
    let gpu = gpu();
    let [p, g, s1, s2] = [(); 4].map(|_| Tensor::zeros(&gpu, &[10]).unwrap());
    let step = Tensor::from_u32(&gpu, &[1], &[1]).unwrap();
    let short = Tensor::zeros(&gpu, &[9]).unwrap();
    let sched = LrSchedule::Step { every: 2, gamma: 0.5 };

    let adamw = AdamConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        schedule: sched,
        eps_placement: EpsPlacement::Torch,
        decay: DecayMask::All,
    };
    adamw_update(&gpu, &p, &g, &s1, &s2, &step, &adamw).expect("valid adamw");
    let k = "adamw_update";
    expect_err(
        "adamw beta1",
        adamw_update(&gpu, &p, &g, &s1, &s2, &step, &AdamConfig { beta1: 1.0, ..adamw }),
        &[k, "beta1"],
    );
    expect_err("adamw v length", adamw_update(&gpu, &p, &g, &s1, &short, &step, &adamw), &[k, "v must", "[9]"]);
    expect_err("adamw m is v", adamw_update(&gpu, &p, &g, &s1, &s1, &step, &adamw), &[k, "share memory"]);

    let rms = RmsPropConfig {
        lr: 0.01,
        rho: 0.99,
        eps: 1e-8,
        momentum: 0.9,
        weight_decay: 0.0,
        schedule: sched,
        eps_placement: EpsPlacement::Torch,
    };
    rmsprop_update(&gpu, &p, &g, &s1, Some(&s2), Some(&step), &rms).expect("valid rmsprop");
    let k = "rmsprop_update";
    expect_err("rmsprop no buf", rmsprop_update(&gpu, &p, &g, &s1, None, Some(&step), &rms), &[k, "momentum_buf"]);
    let plain = RmsPropConfig { momentum: 0.0, ..rms };
    expect_err(
        "rmsprop extra buf",
        rmsprop_update(&gpu, &p, &g, &s1, Some(&s2), Some(&step), &plain),
        &[k, "momentum_buf"],
    );
    expect_err("rmsprop no step", rmsprop_update(&gpu, &p, &g, &s1, Some(&s2), None, &rms), &[k, "step", "Step"]);
    let constant = RmsPropConfig { schedule: LrSchedule::Constant, ..plain };
    rmsprop_update(&gpu, &p, &g, &s1, None, None, &constant).expect("a constant rate needs no step");
    expect_err(
        "rmsprop rho",
        rmsprop_update(&gpu, &p, &g, &s1, None, None, &RmsPropConfig { rho: 1.0, ..constant }),
        &[k, "rho"],
    );
    expect_err(
        "rmsprop sq length",
        rmsprop_update(&gpu, &p, &g, &short, None, None, &constant),
        &[k, "square_avg", "[9]"],
    );

    let ada = AdagradConfig {
        lr: 0.1,
        initial_accumulator: 0.1,
        eps: 1e-10,
        weight_decay: 0.0,
        schedule: sched,
        eps_placement: EpsPlacement::Torch,
    };
    adagrad_update(&gpu, &p, &g, &s1, &step, &ada).expect("valid adagrad");
    let k = "adagrad_update";
    let bad = AdagradConfig { initial_accumulator: -1.0, ..ada };
    expect_err("adagrad init", adagrad_update(&gpu, &p, &g, &s1, &step, &bad), &[k, "initial_accumulator"]);
    let f32_step = Tensor::zeros(&gpu, &[1]).unwrap();
    expect_err("adagrad f32 step", adagrad_update(&gpu, &p, &g, &s1, &f32_step, &ada), &[k, "u32"]);
    expect_err("adagrad sum is grad", adagrad_update(&gpu, &p, &g, &g, &step, &ada), &[k, "share memory"]);

    let delta = AdadeltaConfig { lr: 1.0, rho: 0.9, eps: 1e-6, weight_decay: 0.0, schedule: LrSchedule::Constant };
    adadelta_update(&gpu, &p, &g, &s1, &s2, None, &delta).expect("valid adadelta");
    let k = "adadelta_update";
    expect_err(
        "adadelta eps",
        adadelta_update(&gpu, &p, &g, &s1, &s2, None, &AdadeltaConfig { eps: 0.0, ..delta }),
        &[k, "eps"],
    );
    expect_err("adadelta u length", adadelta_update(&gpu, &p, &g, &s1, &short, None, &delta), &[k, "acc_delta", "[9]"]);
    let empty = Tensor::zeros(&gpu, &[0]).unwrap();
    expect_err("adadelta empty", adadelta_update(&gpu, &empty, &empty, &empty, &empty, None, &delta), &[k, "empty"]);

    // Schedules: bad numbers, and a scheduled SGD without a step.
    let sgd = SgdConfig { lr: 0.1, momentum: 0.0, nesterov: false, weight_decay: 0.0, schedule: sched };
    let k = "sgd_update";
    expect_err("sgd scheduled without step", sgd_update(&gpu, &p, &g, None, &sgd), &[k, "step"]);
    sgd_update_with_step(&gpu, &p, &g, None, Some(&step), &sgd).expect("valid scheduled sgd");
    for (what, schedule, field) in [
        ("every 0", LrSchedule::Step { every: 0, gamma: 0.5 }, "every"),
        ("gamma 0", LrSchedule::Step { every: 1, gamma: 0.0 }, "gamma"),
        ("gamma NaN", LrSchedule::Step { every: 1, gamma: f32::NAN }, "gamma"),
        ("decay_steps 0", LrSchedule::Exponential { decay_steps: 0, decay_rate: 0.5 }, "decay_steps"),
        ("decay_rate < 0", LrSchedule::Exponential { decay_steps: 1, decay_rate: -0.5 }, "decay_rate"),
        ("total_steps 0", LrSchedule::Cosine { total_steps: 0, min_lr: 0.0 }, "total_steps"),
        ("min_lr > lr", LrSchedule::Cosine { total_steps: 5, min_lr: 0.2 }, "min_lr"),
    ] {
        let cfg = SgdConfig { schedule, ..sgd };
        expect_err(what, sgd_update_with_step(&gpu, &p, &g, None, Some(&step), &cfg), &[k, field]);
    }
}

/// Every rule given the counters [t, skip] of a guarded step: with skip 0 it is the plain update
/// with [t]; with skip 1 it leaves parameters and state exactly as they were.
#[test]
fn guarded_updates_do_nothing_for_a_skipped_step() {
    use wgnn::internals::kernels::optimizer::{
        adadelta_update, adagrad_update, adamw_update, rmsprop_update, sgd_update_with_step, AdadeltaConfig,
        AdagradConfig, EpsPlacement, RmsPropConfig,
    };
    use wgnn::Plan;
    type Rule = dyn Fn(&Gpu, &Tensor, &Tensor, &Tensor, &Tensor, &Tensor) -> wgnn::Result<Plan>;
    let sched = LrSchedule::Constant;
    let adam = AdamConfig {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        schedule: sched,
        eps_placement: EpsPlacement::Torch,
        decay: DecayMask::All,
    };
    let sgd = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.0, schedule: sched };
    let rms = RmsPropConfig {
        lr: 1e-2,
        rho: 0.9,
        eps: 1e-7,
        momentum: 0.5,
        weight_decay: 0.0,
        schedule: sched,
        eps_placement: EpsPlacement::Torch,
    };
    let adagrad = AdagradConfig {
        lr: 0.1,
        initial_accumulator: 0.1,
        eps: 1e-7,
        weight_decay: 0.0,
        schedule: sched,
        eps_placement: EpsPlacement::Torch,
    };
    let adadelta = AdadeltaConfig { lr: 1.0, rho: 0.95, eps: 1e-6, weight_decay: 0.0, schedule: sched };
    let rules: Vec<(&str, Box<Rule>)> = vec![
        ("adam", Box::new(move |g, p, gr, s1, s2, t| adam_update(g, p, gr, s1, s2, t, &adam))),
        ("adamw", Box::new(move |g, p, gr, s1, s2, t| adamw_update(g, p, gr, s1, s2, t, &adam))),
        ("sgd", Box::new(move |g, p, gr, s1, _, t| sgd_update_with_step(g, p, gr, Some(s1), Some(t), &sgd))),
        ("rmsprop", Box::new(move |g, p, gr, s1, s2, t| rmsprop_update(g, p, gr, s1, Some(s2), Some(t), &rms))),
        ("adagrad", Box::new(move |g, p, gr, s1, _, t| adagrad_update(g, p, gr, s1, t, &adagrad))),
        ("adadelta", Box::new(move |g, p, gr, s1, s2, t| adadelta_update(g, p, gr, s1, s2, Some(t), &adadelta))),
    ];
    let gpu = gpu();
    let mut rng = Rng::new(12);
    for (name, rule) in &rules {
        for len in [7, 64] {
            let start: Vec<Vec<f32>> = (0..4).map(|_| rng.vec_uniform(len, 0.1, 1.0)).collect();
            let run = |counters: &[u32]| {
                let t: Vec<Tensor> = start.iter().map(|v| Tensor::from_slice(&gpu, &[len], v).unwrap()).collect();
                let step = Tensor::from_u32(&gpu, &[counters.len()], counters).unwrap();
                gpu.run(&[&rule(&gpu, &t[0], &t[1], &t[2], &t[3], &step).unwrap()]).unwrap();
                [&t[0], &t[2], &t[3]].map(|t| t.to_vec().unwrap())
            };
            let plain = run(&[3]);
            assert_eq!(run(&[3, 0]), plain, "{name} len {len}: guarded, not skipped");
            assert_ne!(plain[0], start[0], "{name} len {len}: the plain update changes the parameters");
            let skipped = run(&[3, 1]);
            assert_eq!(skipped, [start[0].clone(), start[2].clone(), start[3].clone()], "{name} len {len}: skipped");
        }
    }
}
