//! CPU reference of shaders/softmax_xent.wgsl.

/// Softmax cross-entropy.  logits: [n, c], labels: `[n]` (each < c) →
/// (loss_rows `[n]` = logsumexp − logit of the label, dlogits [n, c] = (softmax − onehot)·grad_scale,
/// correct_rows `[n]` = 1.0 where the first argmax is the label). A label ≥ c gives the kernel's
/// answer to a label the host could not check: a NaN loss, correct 0, dlogits softmax·grad_scale.
pub fn softmax_xent(
    logits: &[f32],
    labels: &[u32],
    n: usize,
    c: usize,
    grad_scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(logits.len(), n * c, "softmax_xent: logits must be n × c");
    assert_eq!(labels.len(), n, "softmax_xent: labels must have n values");
    let mut loss = vec![0.0f32; n];
    let mut dlogits = vec![0.0f32; n * c];
    let mut correct = vec![0.0f32; n];
    for r in 0..n {
        let row = &logits[r * c..(r + 1) * c];
        let label = labels[r] as usize;
        let (best, m) = first_argmax(row);
        let s: f32 = row.iter().map(|&z| (z - m).exp()).sum();
        loss[r] = row.get(label).map_or(f32::NAN, |z| m + s.ln() - z);
        correct[r] = (best == label) as u32 as f32;
        for (j, &z) in row.iter().enumerate() {
            let prob = (z - m).exp() / s;
            dlogits[r * c + j] = (prob - (j == label) as u32 as f32) * grad_scale;
        }
    }
    (loss, dlogits, correct)
}

/// Categorical cross-entropy on one-hot or soft targets.  logits, targets: [n, c] →
/// (loss_rows `[n]` = Σ_j t_j·(logsumexp − z_j), dlogits [n, c] = (softmax·Σt − t)·grad_scale,
/// correct_rows `[n]` = 1.0 where the first argmax of the logits is the first argmax of the targets).
pub fn softmax_xent_dense(
    logits: &[f32],
    targets: &[f32],
    n: usize,
    c: usize,
    grad_scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(logits.len(), n * c, "softmax_xent_dense: logits must be n × c");
    assert_eq!(targets.len(), n * c, "softmax_xent_dense: targets must be n × c");
    let mut loss = vec![0.0f32; n];
    let mut dlogits = vec![0.0f32; n * c];
    let mut correct = vec![0.0f32; n];
    for r in 0..n {
        let row = &logits[r * c..(r + 1) * c];
        let t = &targets[r * c..(r + 1) * c];
        let (best, m) = first_argmax(row);
        let (t_best, _) = first_argmax(t);
        let s: f32 = row.iter().map(|&z| (z - m).exp()).sum();
        let t_sum: f32 = t.iter().sum();
        let t_gap: f32 = t.iter().zip(row).map(|(&tj, &z)| tj * (m - z)).sum();
        loss[r] = t_sum * s.ln() + t_gap;
        correct[r] = (best == t_best) as u32 as f32;
        for (j, &z) in row.iter().enumerate() {
            let prob = (z - m).exp() / s;
            dlogits[r * c + j] = (prob * t_sum - t[j]) * grad_scale;
        }
    }
    (loss, dlogits, correct)
}

/// Row-wise softmax.  logits: [n, c] → probs: [n, c].
pub fn softmax(logits: &[f32], n: usize, c: usize) -> Vec<f32> {
    assert_eq!(logits.len(), n * c, "softmax: logits must be n × c");
    let mut probs = vec![0.0f32; n * c];
    for r in 0..n {
        let row = &logits[r * c..(r + 1) * c];
        let (_, m) = first_argmax(row);
        let s: f32 = row.iter().map(|&z| (z - m).exp()).sum();
        for (j, &z) in row.iter().enumerate() {
            probs[r * c + j] = (z - m).exp() / s;
        }
    }
    probs
}

/// Index and value of the first maximum of a non-empty row.
fn first_argmax(row: &[f32]) -> (usize, f32) {
    let mut best = 0;
    for (j, &z) in row.iter().enumerate().skip(1) {
        if z > row[best] {
            best = j;
        }
    }
    (best, row[best])
}
