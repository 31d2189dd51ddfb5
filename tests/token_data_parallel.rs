//! Data-parallel `fit_tokens` (`fit_tokens_data_parallel`) on two devices of one process
//! ([`ThreadRank`], as tests/multi_adapter.rs), with char_gpt's GPT, tiny: 2 ranks at batch b
//! train as one process at batch 2b (per-step losses, validation losses and every parameter
//! within the CPU reference's tolerance over 24 steps, the replicas bit-identical); one rank
//! ([`SingleProcess`]) trains exactly as plain `fit_tokens`; models or tokens that differ
//! between the ranks are refused by name, as are the CPU backend and skipping; a checkpoint
//! resumes on as many ranks and is refused on another number; a cancel stops one rank where plain
//! `fit_tokens` stops; with dropout each rank draws masks of its own.

mod common;
#[path = "../examples/common/gpt.rs"]
#[allow(dead_code)]
mod gpt;

use common::fusion::StepLosses;
use common::tiny_text::tiny_text as text;
use common::{assert_close, gpu, scratch};
use gpt::{gpt_with_dropout, nanogpt_adamw, GptConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use wgnn::collective::{Collective, SingleProcess, ThreadRank};
use wgnn::model::{Backend, Checkpointing, Loss, Observer, Progress, Sequential, TokenFitOptions};
use wgnn::{Gpu, GpuOptions, History, ProfileOverride, TokenDataset, WgnnError};

const TINY: GptConfig = GptConfig { vocab: 11, block: 8, n_layer: 2, n_head: 2, n_embd: 16 };

/// A device of its own (not the suite's shared one), with the profile `$WGNN_PROFILE` names and
/// the autotuner off: every rank and the reference run the static policy's kernels.
fn device() -> Gpu {
    let profile = match std::env::var("WGNN_PROFILE") {
        Ok(name) => ProfileOverride::parse(&name).expect("WGNN_PROFILE is cpu, gpu or adapter"),
        Err(_) => ProfileOverride::Adapter,
    };
    Gpu::with_options(&GpuOptions { autotune: false, profile, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

/// The tiny GPT with `dropout`, `n_layer` blocks, compiled with nanoGPT's AdamW over 24 steps.
fn model(backend: &Backend, n_layer: usize, dropout: f32) -> Sequential {
    let mut model = gpt_with_dropout(GptConfig { n_layer, ..TINY }, dropout, 7).build(backend).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, nanogpt_adamw(3e-3, 3e-4, 2, 24, 0.1)).unwrap();
    model
}

/// What a run gives: (per-step losses, the history, every parameter).
type Run = (Vec<f32>, History, Vec<wgnn::model::Parameter>);

/// `body(rank, device)` on each rank of a 2-rank group, a thread each: the results in rank order.
fn on_two_ranks<T: Send>(gpus: &[Gpu; 2], body: impl Fn(&ThreadRank, &Gpu) -> T + Sync) -> Vec<T> {
    let body = &body;
    std::thread::scope(|s| {
        let threads: Vec<_> = ThreadRank::group(2)
            .unwrap()
            .into_iter()
            .zip(gpus)
            .map(|(rank, gpu)| s.spawn(move || body(&rank, gpu)))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

fn opts(batch_size: usize) -> TokenFitOptions<'static> {
    TokenFitOptions {
        batch_size,
        steps: 24,
        eval_every: 8,
        eval_batches: 2,
        clip_norm: Some(1.0),
        progress_every: 1,
        ..Default::default()
    }
}

#[test]
fn two_ranks_train_as_one_process_with_twice_the_batch() {
    let (train, val) = text(800, 3).split(0.8).unwrap();
    let gpus = [device(), device()];
    let ranks: Vec<Run> = on_two_ranks(&gpus, |rank, gpu| {
        let mut m = model(&Backend::Gpu(gpu.clone()), 2, 0.0);
        let mut steps = StepLosses::default();
        let history = m.fit_tokens_data_parallel_with(&train, Some(&val), &opts(3), rank, &mut steps).unwrap();
        (steps.losses, history, m.parameters().unwrap())
    });
    let mut single = model(&Backend::Gpu(gpus[0].clone()), 2, 0.0);
    let mut single_steps = StepLosses::default();
    let single_history = single.fit_tokens_with(&train, Some(&val), &opts(6), &mut single_steps).unwrap();

    let (losses, history, params) = &ranks[0];
    assert_eq!(losses.len(), 24, "a tick per step");
    assert_close("per-step loss, 2 ranks at 3 vs 1 at 6", losses, &single_steps.losses, 1e-4, 1e-3);
    let column = |h: &History, val: bool| -> Vec<f32> {
        h.epochs.iter().map(|r| if val { r.val_loss.unwrap() } else { r.train_loss }).collect()
    };
    assert_eq!(history.epochs.len(), 3);
    assert_close("train loss per evaluation", &column(history, false), &column(&single_history, false), 1e-4, 1e-3);
    assert_close("validation loss, 2 ranks vs 1", &column(history, true), &column(&single_history, true), 1e-4, 1e-3);
    for (p, want) in params.iter().zip(single.parameters().unwrap()) {
        assert_close(&format!("{} after 24 steps, 2 ranks vs 1", p.name), &p.values, &want.values, 1e-4, 1e-3);
    }
    assert_eq!(&ranks[1].2, params, "rank 1's parameters equal rank 0's, bit for bit");
    assert_eq!(&ranks[1].0, losses, "both ranks saw the same losses");
    assert_eq!(column(&ranks[1].1, true), column(history, true), "both ranks' validation figures");
    assert!(losses[23] < losses[0] * 0.9, "the loss fell: {} → {}", losses[0], losses[23]);
}

#[test]
fn one_rank_trains_exactly_as_plain_fit_tokens() {
    let (train, val) = text(800, 4).split(0.8).unwrap();
    let backend = Backend::Gpu(gpu());
    // With dropout: rank 0 draws plain fit_tokens' masks.
    let (mut plain, mut parallel) = (model(&backend, 2, 0.1), model(&backend, 2, 0.1));
    let (mut plain_steps, mut parallel_steps) = (StepLosses::default(), StepLosses::default());
    let o = opts(4);
    let plain_history = plain.fit_tokens_with(&train, Some(&val), &o, &mut plain_steps).unwrap();
    let history =
        parallel.fit_tokens_data_parallel_with(&train, Some(&val), &o, &SingleProcess, &mut parallel_steps).unwrap();
    assert_eq!(parallel_steps.losses, plain_steps.losses, "per-step losses");
    let figures = |h: &History| h.epochs.iter().map(|r| (r.train_loss, r.val_loss, r.val_accuracy)).collect::<Vec<_>>();
    assert_eq!(figures(&history), figures(&plain_history), "the history");
    assert_eq!(parallel.parameters().unwrap(), plain.parameters().unwrap(), "every parameter after 24 steps");
    assert_ne!(parallel.parameters().unwrap(), model(&backend, 2, 0.1).parameters().unwrap(), "the weights moved");
}

fn refused(what: &str, result: wgnn::Result<History>, needles: &[&str]) {
    match result {
        Err(WgnnError::InvalidArgument { detail, .. }) => {
            assert!(needles.iter().all(|n| detail.contains(n)), "{what}: {detail:?} should name {needles:?}")
        }
        other => panic!("{what}: expected a refusal naming {needles:?}, got {other:?}"),
    }
}

#[test]
fn what_differs_between_ranks_or_is_not_supported_is_refused_by_name() {
    let (train, val) = text(400, 5).split(0.8).unwrap();
    let gpus = [device(), device()];
    let o = TokenFitOptions { steps: 4, eval_every: 2, ..opts(2) };
    // Rank 1 with one block fewer; then rank 1 with other tokens.
    let errors = on_two_ranks(&gpus, |rank, gpu| {
        let n_layer = if rank.rank() == 0 { 2 } else { 1 };
        let fewer = model(&Backend::Gpu(gpu.clone()), n_layer, 0.0).fit_tokens_data_parallel(&train, None, &o, rank);
        let other = if rank.rank() == 0 { train.clone() } else { text(320, 6) };
        let elsewhere = model(&Backend::Gpu(gpu.clone()), 2, 0.0).fit_tokens_data_parallel(&other, None, &o, rank);
        (fewer, elsewhere)
    });
    for (rank, (fewer, elsewhere)) in errors.into_iter().enumerate() {
        refused(&format!("rank {rank}: another model"), fewer, &["architecture", "differs"]);
        refused(&format!("rank {rank}: other tokens"), elsewhere, &["tokens", "differs"]);
    }
    let cpu = model(&Backend::Cpu, 1, 0.0).fit_tokens_data_parallel(&train, Some(&val), &o, &SingleProcess);
    refused("the CPU backend", cpu, &["CPU backend", "fit_tokens_data_parallel"]);
    let skipping = TokenFitOptions { skip_nonfinite_batches: true, ..o };
    let skipped = model(&Backend::Gpu(gpu()), 1, 0.0).fit_tokens_data_parallel(&train, None, &skipping, &SingleProcess);
    refused("skipping", skipped, &["skip_nonfinite_batches"]);
}

#[test]
fn a_checkpoint_resumes_on_as_many_ranks_and_is_refused_on_another_number() {
    let (train, val) = text(800, 7).split(0.8).unwrap();
    let gpus = [device(), device()];
    let dir = scratch("token_checkpoint");
    let checkpoint = Checkpointing::every_epoch(&dir);
    let o = |steps| TokenFitOptions { steps, ..opts(3) };
    let losses = |h: &History| h.epochs.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    let runs = on_two_ranks(&gpus, |rank, gpu| {
        let backend = Backend::Gpu(gpu.clone());
        let straight = model(&backend, 1, 0.0).fit_tokens_data_parallel(&train, Some(&val), &o(24), rank).unwrap();
        // Stopped after 16 steps: rank 0 writes the checkpoint, both resume from it.
        let stopped = TokenFitOptions { checkpoint: Some(checkpoint), ..o(16) };
        model(&backend, 1, 0.0).fit_tokens_data_parallel(&train, Some(&val), &stopped, rank).unwrap();
        rank.barrier().unwrap();
        let mut resumed = Sequential::resume(checkpoint.last_path(), &backend).unwrap();
        assert_eq!(resumed.resumed_fit().map(|f| f.world_size), Some(2), "the checkpoint records 2 ranks");
        if rank.rank() == 0 {
            // One process is another world size: refused, data-parallel and plain alike.
            let one = resumed.fit_tokens_data_parallel(&train, Some(&val), &o(24), &SingleProcess);
            refused("one rank", one, &["2 ranks", "1 process"]);
            refused("plain fit_tokens", resumed.fit_tokens(&train, Some(&val), &o(24)), &["2 ranks", "1 process"]);
        }
        let continued = resumed.fit_tokens_data_parallel(&train, Some(&val), &o(24), rank).unwrap();
        (losses(&straight), losses(&continued), resumed.parameters().unwrap())
    });
    for (rank, (straight, continued, _)) in runs.iter().enumerate() {
        assert_eq!(continued.len(), 3, "rank {rank}: the checkpoint's 2 evaluations and 1 more");
        assert_close(&format!("rank {rank}: resumed history vs uninterrupted"), continued, straight, 1e-6, 1e-5);
    }
    assert_eq!(runs[0].2, runs[1].2, "the resumed replicas hold the same parameters");
}

#[test]
fn with_dropout_each_rank_draws_masks_of_its_own() {
    // One repeated character: every window is the same, so two ranks differ only by their masks.
    let same = TokenDataset::from_tokens(vec![3; 200], TINY.vocab, "one character").unwrap();
    let gpus = [device(), device()];
    let o = TokenFitOptions { steps: 2, eval_every: 2, progress_every: 0, clip_norm: None, ..opts(2) };
    let loss = |h: History| h.epochs[0].train_loss;
    for dropout in [0.0, 0.3] {
        let two = on_two_ranks(&gpus, |rank, gpu| {
            let mut m = model(&Backend::Gpu(gpu.clone()), 1, dropout);
            m.fit_tokens_data_parallel(&same, None, &o, rank).map(loss).unwrap()
        });
        let one = model(&Backend::Gpu(gpus[0].clone()), 1, dropout).fit_tokens(&same, None, &o).map(loss).unwrap();
        match dropout == 0.0 {
            // Without dropout rank 1 computes what rank 0 does: the mean of two equal losses.
            true => assert_eq!(two[0], one, "2 ranks without dropout vs 1"),
            // Rank 1's masks are not rank 0's: the mean over both ranks is another loss.
            false => assert_ne!(two[0], one, "2 ranks with dropout {dropout} drew the same masks"),
        }
    }
}

/// Records every step's loss, and sets `flag` at (period, step) `at`, as a Ctrl-C would.
struct CancelAt<'f> {
    at: (usize, usize),
    flag: &'f AtomicBool,
    steps: StepLosses,
}

impl Observer for CancelAt<'_> {
    fn on_progress(&mut self, p: &Progress) {
        self.steps.on_progress(p);
        if (p.epoch, p.step) == self.at {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

#[test]
fn a_cancelled_run_stops_where_plain_fit_tokens_stops() {
    let (train, val) = text(800, 8).split(0.8).unwrap();
    let backend = Backend::Gpu(gpu());
    let run = |parallel: bool| {
        let flag = AtomicBool::new(false);
        let o = TokenFitOptions { cancel: Some(&flag), ..opts(4) };
        // Period 2's third step: its all-reduce carries the flag, and the step is dropped.
        let mut observer = CancelAt { at: (2, 3), flag: &flag, steps: StepLosses::default() };
        let mut m = model(&backend, 1, 0.0);
        let history = match parallel {
            true => m.fit_tokens_data_parallel_with(&train, Some(&val), &o, &SingleProcess, &mut observer),
            false => m.fit_tokens_with(&train, Some(&val), &o, &mut observer),
        };
        (history.unwrap(), observer.steps.losses, m)
    };
    let (plain_history, plain_losses, mut plain) = run(false);
    let (history, losses, mut parallel) = run(true);
    assert_eq!(plain_history.cancelled_in, Some(2), "plain fit_tokens stops in period 2");
    assert_eq!(plain_losses.len(), 8 + 3, "period 1's 8 steps and 3 of period 2");
    assert_eq!(history.cancelled_in, Some(2));
    assert_eq!(history.epochs.len(), 1, "period 1 recorded, not the unfinished one");
    assert_eq!(losses, plain_losses, "the same steps");
    assert_eq!(parallel.parameters().unwrap(), plain.parameters().unwrap(), "the weights after 11 steps");
    // t went back with the dropped step: 8 more steps train alike (the windows and the schedule
    // read t).
    let more = TokenFitOptions { steps: 8, eval_every: 8, ..opts(4) };
    plain.fit_tokens(&train, None, &more).unwrap();
    parallel.fit_tokens(&train, None, &more).unwrap();
    assert_eq!(parallel.parameters().unwrap(), plain.parameters().unwrap(), "the weights 8 steps later");
}
