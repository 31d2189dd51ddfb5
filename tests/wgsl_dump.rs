//! `WGNN_DUMP_WGSL=DIR`: every distinct pipeline the engine builds is written into DIR once, as
//! the WGSL it compiles, with a JSON file beside it naming the family, the entry point, the
//! override constants and the layout (what tools/wgsl_check compiles with Dawn/Tint in CI).
//!
//! The only test in this binary: the variable is read once per process, at the first pipeline
//! built, so no other test may build one before it is set.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use wgnn::internals::kernels::softmax_xent::{softmax, softmax_xent, SoftmaxXentOut};
use wgnn::internals::wgsl_dump::DUMP_ENV;
use wgnn::{Gpu, Tensor};

/// Builds and runs three softmax_xent pipelines (fused totals, no totals, softmax), each twice.
fn run_losses(gpu: &Gpu) {
    let (n, c) = (5, 3);
    let logits = Tensor::from_slice(gpu, &[n, c], &[0.5; 15]).unwrap();
    let labels = Tensor::from_u32(gpu, &[n], &[0, 1, 2, 0, 1]).unwrap();
    let z = |shape: &[usize]| Tensor::zeros(gpu, shape).unwrap();
    let (loss, dlogits, correct, totals, probs) = (z(&[n]), z(&[n, c]), z(&[n]), z(&[2]), z(&[n, c]));
    for _ in 0..2 {
        let fused =
            SoftmaxXentOut { loss_rows: &loss, dlogits: Some(&dlogits), correct_rows: &correct, totals: Some(&totals) };
        let eval = SoftmaxXentOut { loss_rows: &loss, dlogits: None, correct_rows: &correct, totals: None };
        let plans = [
            softmax_xent(gpu, &logits, &labels, 0.2, &fused).unwrap(),
            softmax_xent(gpu, &logits, &labels, 0.2, &eval).unwrap(),
            softmax(gpu, &logits, &probs).unwrap(),
        ];
        gpu.run(&plans.iter().collect::<Vec<_>>()).unwrap();
    }
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
}

#[test]
fn every_distinct_pipeline_is_dumped_once_as_the_engine_compiles_it() {
    let dir = std::env::temp_dir().join(format!("wgnn-wgsl-dump-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::env::set_var(DUMP_ENV, &dir);

    let gpu = common::gpu();
    run_losses(&gpu);
    assert_eq!(gpu.pipeline_count(), 3, "fused totals, evaluation only, softmax");
    let names = file_names(&dir);
    assert_eq!(names.len(), 6, "a .wgsl and a .json per pipeline, nothing else: {names:?}");

    // Another device in the same process builds the same pipelines again: no new file.
    let other = Gpu::new().unwrap();
    run_losses(&other);
    assert_eq!(other.pipeline_count(), 3);
    assert_eq!(file_names(&dir), names, "the second device's pipelines are the same dumps");

    let mut seen = BTreeSet::new();
    for name in names.iter().filter(|n| n.ends_with(".json")) {
        let info: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        assert_eq!(info["family"], "softmax_xent", "{name}: {info}");
        let entry = info["entry_point"].as_str().unwrap();
        let wgsl_name = info["wgsl"].as_str().unwrap();
        assert_eq!(name.strip_suffix(".json"), wgsl_name.strip_suffix(".wgsl"), "{name}");
        assert!(name.starts_with(&format!("softmax_xent.{entry}.")), "{name}");
        let wgsl = std::fs::read_to_string(dir.join(wgsl_name)).unwrap();
        assert_eq!(wgsl, include_str!("../shaders/softmax_xent.wgsl"), "{wgsl_name}: the source as compiled");
        let bindings = ["uniform", "storage", "storage", "storage", "storage", "storage", "storage"];
        assert_eq!(info["bindings"], serde_json::json!(bindings), "{name}");
        let constants = &info["constants"];
        seen.insert(format!("{entry} {constants}"));
    }
    let want: BTreeSet<String> = [
        r#"softmax_xent {"FUSED_TOTALS":1.0,"HAS_DLOGITS":1.0,"WG":64.0}"#,
        r#"softmax_xent {"FUSED_TOTALS":0.0,"HAS_DLOGITS":0.0,"WG":64.0}"#,
        r#"softmax {"WG":64.0}"#,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(seen, want);
    std::fs::remove_dir_all(&dir).ok();
}
