//! embedding.wgsl against the CPU reference: u32 and packed u8 ids, ids out of range, repeated
//! ids summed deterministically, grids past the workgroup limit and chained backward dispatches,
//! finite differences of the reference, bad arguments.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::embedding::{
    embedding_backward, embedding_forward, TokenIds, BACKWARD_TOKENS_PER_DISPATCH,
};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, Tensor, WgnnError};

/// Ids up to `max_id`: mostly below `vocab`, with two in seven out of range (vocab itself where
/// it fits, and max_id).
fn ids_of(rng: &mut Rng, tokens: usize, vocab: usize, max_id: u32) -> Vec<u32> {
    (0..tokens)
        .map(|n| match n % 7 {
            3 => (vocab as u32).min(max_id),
            5 => max_id,
            _ => rng.below(vocab.min(max_id as usize + 1)) as u32,
        })
        .collect()
}

/// Bytes packed 4 to a word, least significant first.
fn pack_u8(ids: &[u32]) -> Vec<u32> {
    ids.chunks(4).map(|c| c.iter().enumerate().fold(0u32, |w, (i, &b)| w | (b & 0xff) << (8 * i))).collect()
}

/// The ids as the kernel reads them: u32, or packed u8 (then the tensor is kept alive here).
struct Ids {
    tensor: Tensor,
    tokens: usize,
    u8: bool,
}

impl Ids {
    fn new(gpu: &Gpu, ids: &[u32], u8: bool) -> Ids {
        let tensor = match u8 {
            true => {
                let words = pack_u8(ids);
                Tensor::from_u32(gpu, &[words.len()], &words).unwrap()
            }
            false => Tensor::from_u32(gpu, &[ids.len()], ids).unwrap(),
        };
        Ids { tensor, tokens: ids.len(), u8 }
    }
    fn arg(&self) -> TokenIds<'_> {
        match self.u8 {
            true => TokenIds::U8 { words: &self.tensor, tokens: self.tokens },
            false => TokenIds::U32(&self.tensor),
        }
    }
}

fn run_forward(gpu: &Gpu, ids: &[u32], u8: bool, table: &[f32], vocab: usize, cols: usize) -> Vec<f32> {
    let ids_t = Ids::new(gpu, ids, u8);
    let table_t = Tensor::from_slice(gpu, &[vocab, cols], table).unwrap();
    // Filled with NaN first: every value, zeros of out-of-range ids included, must be written.
    let out = Tensor::from_slice(gpu, &[ids.len(), cols], &vec![f32::NAN; ids.len() * cols]).unwrap();
    gpu.run(&[&embedding_forward(gpu, ids_t.arg(), &table_t, &out).unwrap()]).unwrap();
    out.to_vec().unwrap()
}

fn run_backward(
    gpu: &Gpu,
    ids: &[u32],
    u8: bool,
    dy: &[f32],
    start: &[f32],
    cols: usize,
    accumulate: bool,
) -> Vec<f32> {
    let vocab = start.len() / cols;
    let ids_t = Ids::new(gpu, ids, u8);
    let dy_t = Tensor::from_slice(gpu, &[ids.len(), cols], dy).unwrap();
    let dtable = Tensor::from_slice(gpu, &[vocab, cols], start).unwrap();
    gpu.run(&[&embedding_backward(gpu, ids_t.arg(), &dy_t, &dtable, accumulate).unwrap()]).unwrap();
    dtable.to_vec().unwrap()
}

#[test]
fn forward_matches_cpu_with_ids_out_of_range() {
    let gpu = gpu();
    let mut rng = Rng::new(51);
    for &tokens in &[1, 7, 1031] {
        for (i, &cols) in [1, 3, 65, 129, 384].iter().enumerate() {
            let vocab = [1, 65, 300][(tokens + i) % 3];
            for u8 in [false, true] {
                let max_id = if u8 { 255 } else { u32::MAX };
                let ids = ids_of(&mut rng, tokens, vocab, max_id);
                let table = rng.vec_uniform(vocab * cols, -1.0, 1.0);
                let got = run_forward(&gpu, &ids, u8, &table, vocab, cols);
                let want = cpu::embedding_forward(&ids, &table, vocab, cols);
                assert_close(
                    &format!("embedding_forward {tokens} tokens, {vocab}x{cols}, u8={u8}"),
                    &got,
                    &want,
                    0.0,
                    0.0,
                );
            }
        }
    }
}

#[test]
fn backward_sums_repeated_ids_like_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(52);
    for &tokens in &[1, 7, 1031] {
        for (i, &cols) in [1, 3, 65, 129, 384].iter().enumerate() {
            // A vocabulary of 3 repeats every id hundreds of times in 1031 tokens.
            let vocab = [3, 65, 300][(tokens + i) % 3];
            let accumulate = (tokens + i) % 2 == 0;
            let u8 = i % 2 == 1;
            let ids = ids_of(&mut rng, tokens, vocab, if u8 { 255 } else { u32::MAX });
            let dy = rng.vec_uniform(tokens * cols, -1.0, 1.0);
            let start = rng.vec_uniform(vocab * cols, -1.0, 1.0);
            let got = run_backward(&gpu, &ids, u8, &dy, &start, cols, accumulate);
            let sums = cpu::embedding_backward(&ids, &dy, vocab, cols);
            let want: Vec<f32> = match accumulate {
                true => sums.iter().zip(&start).map(|(s, a)| s + a).collect(),
                false => sums,
            };
            let what = format!("embedding_backward {tokens} tokens, {vocab}x{cols}, u8={u8}, accumulate={accumulate}");
            let tol = 1e-6 * tokens as f32;
            assert_close(&what, &got, &want, tol, 1e-5);
        }
    }
}

#[test]
fn backward_is_bit_identical_across_runs_over_chained_dispatches() {
    // More tokens than one backward dispatch walks, few ids: long chains of repeated additions,
    // whose rounding shows any change of order.
    let gpu = gpu();
    let mut rng = Rng::new(53);
    let (tokens, vocab, cols) = (2 * BACKWARD_TOKENS_PER_DISPATCH + 77, 5, 3);
    let ids: Vec<u32> = (0..tokens).map(|_| rng.below(vocab) as u32).collect();
    let dy = rng.vec_uniform(tokens * cols, -1.0, 1.0);
    let zeros = vec![0.0f32; vocab * cols];
    let first = run_backward(&gpu, &ids, false, &dy, &zeros, cols, false);
    let second = run_backward(&gpu, &ids, false, &dy, &zeros, cols, false);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&first), bits(&second), "two runs of the backward differ");
    let want = cpu::embedding_backward(&ids, &dy, vocab, cols);
    assert_close("embedding_backward over chained dispatches", &first, &want, 1e-3, 1e-4);
}

#[test]
fn more_tokens_than_one_grid_dimension_holds() {
    let gpu = gpu();
    let mut rng = Rng::new(54);
    let (tokens, vocab, cols) = (70_001, 11, 2);
    let ids = ids_of(&mut rng, tokens, vocab, u32::MAX);
    let table = rng.vec_uniform(vocab * cols, -1.0, 1.0);
    let got = run_forward(&gpu, &ids, false, &table, vocab, cols);
    assert_close("embedding_forward 70,001 tokens", &got, &cpu::embedding_forward(&ids, &table, vocab, cols), 0.0, 0.0);
}

#[test]
fn backward_reference_matches_finite_differences() {
    // f(table) = Σ w ⊙ embedding(ids, table): its gradient is the backward of w.
    let mut rng = Rng::new(55);
    let (vocab, cols) = (4, 3);
    let ids = [2u32, 0, 2, 9, 3, 2, 0];
    let table = rng.vec_uniform(vocab * cols, -1.0, 1.0);
    let w = rng.vec_uniform(ids.len() * cols, -1.0, 1.0);
    let num = numeric_gradient(&table, 1e-2, |tp| dot(&w, &cpu::embedding_forward(&ids, tp, vocab, cols)));
    assert_close("d/dtable", &cpu::embedding_backward(&ids, &w, vocab, cols), &num, 1e-4, 1e-3);
}

#[test]
fn bad_arguments_are_errors_naming_the_kernel() {
    let gpu = gpu();
    let ids = Tensor::from_u32(&gpu, &[5], &[0, 1, 2, 3, 4]).unwrap();
    let table = Tensor::zeros(&gpu, &[10, 3]).unwrap();
    let out = Tensor::zeros(&gpu, &[5, 3]).unwrap();
    embedding_forward(&gpu, TokenIds::U32(&ids), &table, &out).expect("a good call");
    let as_f32 = Tensor::zeros(&gpu, &[5]).unwrap();
    let err = embedding_forward(&gpu, TokenIds::U32(&as_f32), &table, &out).err().expect("f32 ids");
    assert!(matches!(err, WgnnError::DType { .. }) && err.to_string().contains("embedding_forward"), "{err}");
    let err = embedding_forward(&gpu, TokenIds::U32(&ids), &table, &Tensor::zeros(&gpu, &[3, 5]).unwrap())
        .err()
        .expect("out of another width");
    assert!(matches!(err, WgnnError::Shape { .. }) && err.to_string().contains("[3, 5]"), "{err}");
    let err = embedding_forward(&gpu, TokenIds::U32(&ids), &table, &Tensor::zeros(&gpu, &[6, 3]).unwrap())
        .err()
        .expect("out for 6 tokens");
    assert!(err.to_string().contains("out") && err.to_string().contains("[6, 3]"), "{err}");
    let err = embedding_forward(&gpu, TokenIds::U8 { words: &ids, tokens: 21 }, &table, &out)
        .err()
        .expect("21 u8 ids in 5 words");
    assert!(err.to_string().contains("6 packed words"), "{err}");
    let err = embedding_backward(&gpu, TokenIds::U32(&ids), &out, &Tensor::zeros(&gpu, &[30]).unwrap(), false)
        .err()
        .expect("a 1-D table gradient");
    assert!(err.to_string().contains("embedding_backward"), "{err}");
    let err = embedding_backward(&gpu, TokenIds::U32(&ids), &out, &out, false).err().expect("dy is dtable");
    assert!(err.to_string().contains("share memory"), "{err}");
}
