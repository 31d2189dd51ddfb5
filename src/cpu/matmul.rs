//! CPU reference of shaders/matmul.wgsl (without the epilogue, which is `bias_act_forward` /
//! `Activation::derivative_from_output` applied to the result).

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
