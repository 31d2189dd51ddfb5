//! CPU reference of shaders/matmul.wgsl (without the epilogue, which is `bias_act_forward` /
//! `Activation::derivative_from_saved` applied to the result), and of matmul_gathered.wgsl's A.

/// C = op(A)·op(B).  a: [m, k] (or [k, m] when trans_a), b: [k, n] (or [n, k] when trans_b)
/// → c: [m, n]. Row-major; sums in f64 so the reference is more accurate than any kernel.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool) -> Vec<f32> {
    assert_eq!(a.len(), m * k, "matmul: a must hold m × k values");
    assert_eq!(b.len(), k * n, "matmul: b must hold k × n values");
    let at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
    let bt = |p: usize, j: usize| if trans_b { b[j * k + p] } else { b[p * n + j] };
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum::<f64>() as f32;
        }
    }
    c
}

/// C = op(A)·B and the column sums of B, Σ_k B[k, n] (B not transposed).  a: [m, k] (or [k, m]
/// when trans_a), b: [k, n] → (c: [m, n], col_sum: `[n]`).
pub fn matmul_column_sum(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, trans_a: bool) -> (Vec<f32>, Vec<f32>) {
    (matmul(a, b, m, k, n, trans_a, false), super::reduce::column_sum(b, k, n))
}

/// Stored A of matmul_gathered.wgsl: row r is norm(src[idx[start + min(r, rows − 1)], :]), for r
/// below `stored_rows` (rows past the batch repeat its last one), norm(v) = v·scale + shift.
/// src: [total_rows, dim] (already f32) → [stored_rows, dim]; multiply it with [`matmul`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_gathered_a(
    src: &[f32],
    dim: usize,
    idx: &[u32],
    start: usize,
    rows: usize,
    stored_rows: usize,
    scale: f32,
    shift: f32,
) -> Vec<f32> {
    assert!(rows >= 1 && rows <= stored_rows, "matmul_gathered_a: 1 ≤ rows ≤ stored_rows");
    let labels = vec![0; src.len() / dim];
    let (gathered, _) = super::gather::gather_rows(src, &labels, dim, idx, start, rows, scale, shift, None);
    let last = &gathered[(rows - 1) * dim..];
    let mut a = gathered.clone();
    for _ in rows..stored_rows {
        a.extend_from_slice(last);
    }
    a
}
