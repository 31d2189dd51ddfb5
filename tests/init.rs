//! Initialisers: statistics for large n, bounds, and reproducibility from the seed.

use wgnn::init::Initializer;
use wgnn::internals::rng::Rng;

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn assert_stats(what: &str, v: &[f32], mean: f64, std: f64) {
    let (m, s) = mean_std(v);
    // 200,000 values: the sample mean is within 5 standard errors, the std within 2%.
    let se = std / (v.len() as f64).sqrt();
    assert!((m - mean).abs() <= 5.0 * se + 1e-7, "{what}: mean {m} vs {mean}");
    assert!((s - std).abs() <= 0.02 * std + 1e-7, "{what}: std {s} vs {std}");
}

const N: usize = 200_000;

#[test]
fn statistics_and_bounds() {
    let mut rng = Rng::new(80);
    assert_eq!(Initializer::Zeros.fill(3, 4, 5, &mut rng), [0.0; 5]);
    assert_eq!(Initializer::Constant(0.25).fill(3, 4, 3, &mut rng), [0.25; 3]);

    let v = Initializer::Uniform { low: -0.5, high: 1.5 }.fill(1, 1, N, &mut rng);
    assert!(v.iter().all(|&x| (-0.5..1.5).contains(&x)), "uniform out of [low, high)");
    assert_stats("uniform", &v, 0.5, 2.0 / 12f64.sqrt());

    let v = Initializer::Normal { mean: 1.0, std: 0.5 }.fill(1, 1, N, &mut rng);
    assert_stats("normal", &v, 1.0, 0.5);

    let (fan_in, fan_out) = (784, 128);
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let v = Initializer::GlorotUniform.fill(fan_in, fan_out, N, &mut rng);
    assert!(v.iter().all(|&x| (x as f64).abs() <= limit), "glorot out of ±{limit}");
    assert_stats("glorot_uniform", &v, 0.0, limit / 3f64.sqrt());
    let max = v.iter().fold(0.0f32, |a, &x| a.max(x.abs())) as f64;
    assert!(max > 0.99 * limit, "glorot: the values should reach near the limit, max {max}");

    let want_std = (2.0 / fan_in as f64).sqrt();
    let v = Initializer::HeNormal.fill(fan_in, fan_out, N, &mut rng);
    assert_stats("he_normal", &v, 0.0, want_std);
    let bound = 2.0 * want_std / 0.879_625_66;
    assert!(v.iter().all(|&x| (x as f64).abs() <= bound * (1.0 + 1e-6)), "he_normal beyond 2σ = {bound}");
    let max = v.iter().fold(0.0f32, |a, &x| a.max(x.abs())) as f64;
    assert!(max > 0.98 * bound, "he_normal: the values should reach near the truncation, max {max}");
}

#[test]
fn same_seed_same_values() {
    for init in [
        Initializer::Uniform { low: -1.0, high: 1.0 },
        Initializer::Normal { mean: 0.0, std: 1.0 },
        Initializer::GlorotUniform,
        Initializer::HeNormal,
    ] {
        let a = init.fill(10, 20, 1000, &mut Rng::new(5));
        let b = init.fill(10, 20, 1000, &mut Rng::new(5));
        let c = init.fill(10, 20, 1000, &mut Rng::new(6));
        assert_eq!(a, b, "{init:?}: same seed, same values");
        assert_ne!(a, c, "{init:?}: another seed, other values");
        assert_eq!(init.fill(10, 20, 0, &mut Rng::new(5)), Vec::<f32>::new());
    }
}
