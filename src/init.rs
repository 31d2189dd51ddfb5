//! Weight initialisers (host side), Keras' definitions, seeded with [`Rng`] so the same seed
//! gives the same values.

use crate::rng::Rng;

/// How to fill a weight tensor of a layer with `fan_in` inputs and `fan_out` outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Initializer {
    Zeros,
    Constant(f32),
    /// Uniform in [low, high).
    Uniform {
        low: f32,
        high: f32,
    },
    /// Normal (not truncated), Keras' `RandomNormal`.
    Normal {
        mean: f32,
        std: f32,
    },
    /// Uniform in [−limit, limit) with limit = √(6 / (fan_in + fan_out)) (Keras' `GlorotUniform`).
    GlorotUniform,
    /// Keras' `HeNormal`: a normal truncated at two standard deviations, of σ =
    /// √(2 / fan_in) / 0.87962566 so that the values' standard deviation is √(2 / fan_in); every
    /// value lies within 2σ (redrawn otherwise).
    HeNormal,
}

/// The standard deviation of a unit normal truncated to [−2, 2].
const TRUNCATED_STD: f32 = 0.879_625_7;

impl Initializer {
    /// `n` values. A fan of 0 is taken as 1 (a layer with no inputs has nothing to fill anyway).
    pub fn fill(&self, fan_in: usize, fan_out: usize, n: usize, rng: &mut Rng) -> Vec<f32> {
        let (fan_in, fan_out) = (fan_in.max(1) as f32, fan_out.max(1) as f32);
        match *self {
            Initializer::Zeros => vec![0.0; n],
            Initializer::Constant(c) => vec![c; n],
            Initializer::Uniform { low, high } => (0..n).map(|_| rng.uniform(low, high)).collect(),
            Initializer::Normal { mean, std } => (0..n).map(|_| mean + std * rng.normal()).collect(),
            Initializer::GlorotUniform => {
                let limit = (6.0 / (fan_in + fan_out)).sqrt();
                (0..n).map(|_| rng.uniform(-limit, limit)).collect()
            }
            Initializer::HeNormal => {
                let sigma = (2.0 / fan_in).sqrt() / TRUNCATED_STD;
                (0..n).map(|_| sigma * truncated_normal(rng)).collect()
            }
        }
    }
}

/// A unit normal redrawn until it lies in [−2, 2] (95% of draws do).
fn truncated_normal(rng: &mut Rng) -> f32 {
    loop {
        let z = rng.normal();
        if z.abs() <= 2.0 {
            return z;
        }
    }
}
