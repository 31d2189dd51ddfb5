//! CPU reference of shaders/gather.wgsl.

/// x[r, j] = norm(src[idx[start + r], j]), `y[r]` = labels[idx[start + r]].
/// src: [total_rows, dim] (already f32), idx: `[n]`, labels: `[total_rows]` → (x [rows, dim], y `[rows]`).
/// norm(v) = v·scale + shift, then (· − `mean[j]`) / `std[j]` when `mean_std` ([2, dim]) is given.
#[allow(clippy::too_many_arguments)]
pub fn gather_rows(
    src: &[f32],
    labels: &[u32],
    dim: usize,
    idx: &[u32],
    start: usize,
    rows: usize,
    scale: f32,
    shift: f32,
    mean_std: Option<&[f32]>,
) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::with_capacity(rows * dim);
    let mut y = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = idx[start + r] as usize;
        for j in 0..dim {
            let mut v = src[row * dim + j] * scale + shift;
            if let Some(ms) = mean_std {
                v = (v - ms[j]) / ms[dim + j];
            }
            x.push(v);
        }
        y.push(labels[row]);
    }
    (x, y)
}

/// The counters a training step's gather advances (`BatchStart::Counter`): reads its position from
/// `epoch_step[parity]`, writes the next one to `epoch_step[1 − parity]` and adds one to `t` where
/// given. Returns the position read.
pub fn gather_counters(epoch_step: &mut [u32; 2], parity: usize, t: Option<&mut u32>) -> u32 {
    let position = epoch_step[parity];
    epoch_step[1 - parity] = position + 1;
    if let Some(t) = t {
        *t += 1;
    }
    position
}
