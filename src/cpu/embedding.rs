//! CPU reference of shaders/embedding.wgsl: rows of a table picked by token ids; an id ≥ vocab
//! gives a row of zeros and no gradient.

/// `out[n, :] = table[ids[n], :]` (zeros where `ids[n] ≥ vocab`). table: [vocab, cols] → out
/// [tokens, cols].
pub fn embedding_forward(ids: &[u32], table: &[f32], vocab: usize, cols: usize) -> Vec<f32> {
    assert_eq!(table.len(), vocab * cols, "embedding_forward: table must be vocab × cols");
    let mut out = Vec::with_capacity(ids.len() * cols);
    for &v in ids {
        match (v as usize) < vocab {
            true => out.extend_from_slice(&table[v as usize * cols..(v as usize + 1) * cols]),
            false => out.extend(std::iter::repeat_n(0.0, cols)),
        }
    }
    out
}

/// `dtable[v, :] = Σ_{n: ids[n] = v} dy[n, :]`, summed in order of n (ids ≥ vocab skipped).
/// dy: [tokens, cols] → dtable [vocab, cols].
pub fn embedding_backward(ids: &[u32], dy: &[f32], vocab: usize, cols: usize) -> Vec<f32> {
    assert_eq!(dy.len(), ids.len() * cols, "embedding_backward: dy must be tokens × cols");
    let mut dtable = vec![0.0f32; vocab * cols];
    for (&v, row) in ids.iter().zip(dy.chunks_exact(cols)) {
        if (v as usize) < vocab {
            let dst = &mut dtable[v as usize * cols..(v as usize + 1) * cols];
            dst.iter_mut().zip(row).for_each(|(d, &g)| *d += g);
        }
    }
    dtable
}
