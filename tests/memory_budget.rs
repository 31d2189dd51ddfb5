//! The memory budget (`GpuOptions::memory_budget`, `$WGNN_MEMORY_BUDGET`): the value in effect is
//! reported, and a smaller budget evaluates in smaller batches with the same results.

mod common;
use common::*;
use wgnn::device::memory_budget::{parse_bytes, MEMORY_BUDGET_ENV, SOFTWARE_BUDGET_CAP};
use wgnn::model::{Backend, Loss, Optimizer, Sequential};
use wgnn::{Activation, Dataset, Gpu, GpuOptions, ProfileOverride};

const SHAPE: [usize; 3] = [8, 8, 1];

fn device(profile: ProfileOverride, memory_budget: Option<u64>) -> Gpu {
    gpu(); // fails with the install hint where there is no adapter at all
    Gpu::with_options(&GpuOptions { profile, memory_budget, ..Default::default() }).unwrap()
}

fn cnn(gpu: &Gpu) -> Sequential {
    let mut m = Sequential::new(SHAPE, 4)
        .conv2d(4, (3, 3), Activation::Relu)
        .max_pool2d((2, 2))
        .flatten()
        .dense(16, Activation::Tanh)
        .dense(3, Activation::Softmax)
        .build(&Backend::Gpu(gpu.clone()))
        .unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    m
}

#[test]
fn the_budget_in_effect_is_reported() {
    let asked = device(ProfileOverride::Adapter, Some(3 << 20));
    assert_eq!(asked.memory_budget(), 3 << 20);
    let default = device(ProfileOverride::Adapter, None);
    let budget = default.memory_budget();
    match std::env::var(MEMORY_BUDGET_ENV).ok().filter(|v| !v.trim().is_empty()) {
        Some(text) => assert_eq!(Some(budget), parse_bytes(&text), "{MEMORY_BUDGET_ENV}={text:?}"),
        None => {
            assert!(budget > 0 && budget <= default.limits().max_buffer_size, "default budget {budget}");
            if default.profile().software {
                let want = default.limits().max_buffer_size.min(SOFTWARE_BUDGET_CAP);
                assert_eq!(budget, want, "software adapter: the largest buffer, at most 1 GiB");
            }
        }
    }
    let zero = Gpu::with_options(&GpuOptions { memory_budget: Some(0), ..Default::default() });
    let Err(error) = zero else { panic!("a budget of 0 bytes is accepted") };
    let message = error.to_string();
    assert!(message.contains("memory_budget"), "{message}");
}

#[test]
fn a_small_budget_evaluates_in_smaller_batches_with_the_same_results() {
    let data: Dataset = synthetic(3001, SHAPE.iter().product(), 3, 5).with_sample_shape(&SHAPE).unwrap();
    for profile in [ProfileOverride::Adapter, ProfileOverride::Gpu] {
        // 8 MiB: a sixteenth, 512 KiB, holds ~100 rows of this network's activations, not 2,048.
        let (large, small) = (device(profile, Some(1 << 30)), device(profile, Some(8 << 20)));
        let (on_large, on_small) = (cnn(&large), cnn(&small));
        let (bytes_large, bytes_small) =
            (on_large.eval_memory_bytes(&data).unwrap(), on_small.eval_memory_bytes(&data).unwrap());
        assert!(
            bytes_small * 4 < bytes_large,
            "{profile:?}: 8 MiB budget binds {bytes_small} bytes, 1 GiB {bytes_large}"
        );
        let (loss_large, acc_large) = on_large.evaluate(&data).unwrap();
        let (loss_small, acc_small) = on_small.evaluate(&data).unwrap();
        // The same weights (same seed); only the order of the per-batch sums differs.
        assert!(
            (loss_large - loss_small).abs() <= 1e-6 * loss_large.abs().max(1.0),
            "{profile:?}: loss {loss_large} vs {loss_small}"
        );
        assert_eq!(acc_large, acc_small, "{profile:?}: accuracy");
        let (p_large, p_small) = (on_large.predict_dataset(&data).unwrap(), on_small.predict_dataset(&data).unwrap());
        assert_eq!(p_large, p_small, "{profile:?}: predictions");
    }
}
