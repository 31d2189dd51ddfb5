//! optimizer.wgsl's AdamW, RMSprop, Adagrad and Adadelta, and SGD and Adam under learning-rate
//! schedules, against the CPU reference over several steps; the references against the rules
//! written out by hand; the schedules' values; bad input; guarded (skipped) steps.

mod common;
use common::optimizer_checks::*;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::optimizer::{
    adadelta_update, adagrad_update, adam_update, adamw_update, rmsprop_update, sgd_update, sgd_update_with_step,
    AdadeltaConfig, AdagradConfig, AdamConfig, DecayMask, EpsPlacement, LrSchedule, RmsPropConfig, SgdConfig,
};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, Tensor};

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
