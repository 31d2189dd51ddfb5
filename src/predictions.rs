//! What `predict` returns: one row of outputs per input row (class probabilities, scores or
//! regression values), with the per-row questions a user asks of them: the likeliest class and
//! the top k.

use std::ops::Deref;

/// A model's outputs, `rows × width`, row-major: one row per input row (for a classifier, one
/// probability per class). It also reads as the flat `&[f32]` of every value, row after row
/// (`Deref`), as `predict` returned before it had rows.
///
/// ```
/// use wgnn::Predictions;
/// let p = Predictions::new(vec![0.1, 0.7, 0.2, 0.6, 0.3, 0.1], 3).unwrap();
/// assert_eq!((p.num_rows(), p.width()), (2, 3));
/// assert_eq!(p.row(1), [0.6, 0.3, 0.1]);
/// assert_eq!(p.argmax(), [1, 0]);
/// assert_eq!(p.top_k(2)[0], [(1, 0.7), (2, 0.2)]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Predictions {
    values: Vec<f32>,
    width: usize,
}

impl Predictions {
    /// Rows of `width` values laid end to end; `None` when `width` is 0 or does not divide the
    /// number of values.
    pub fn new(values: Vec<f32>, width: usize) -> Option<Predictions> {
        (width > 0 && values.len().is_multiple_of(width)).then_some(Predictions { values, width })
    }

    /// How many rows (one per input row).
    pub fn num_rows(&self) -> usize {
        self.values.len() / self.width
    }

    /// Values per row: the model's output width (the class count for a softmax classifier).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Row `i`'s outputs. Panics past the last row, as slice indexing does; see
    /// [`Predictions::get_row`].
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// Row `i`'s outputs, or `None` past the last row.
    pub fn get_row(&self, i: usize) -> Option<&[f32]> {
        (i < self.num_rows()).then(|| self.row(i))
    }

    /// The rows in order.
    pub fn iter_rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.values.chunks_exact(self.width)
    }

    /// Each row's largest output's index: the predicted class of a softmax classifier (the first
    /// on ties). For a one-output model see `Sequential::predict_classes`, which thresholds.
    pub fn argmax(&self) -> Vec<u32> {
        self.iter_rows().map(|row| argmax(row) as u32).collect()
    }

    /// Each row's `k` largest outputs as (index, value), largest first (ties: the lower index
    /// first; NaN last); all of them when `k` is at least the width.
    pub fn top_k(&self, k: usize) -> Vec<Vec<(u32, f32)>> {
        self.iter_rows()
            .map(|row| {
                let mut order: Vec<usize> = (0..row.len()).collect();
                // Stable: equal values keep the lower index first.
                order.sort_by(|&a, &b| larger_first(row[a], row[b]));
                order.into_iter().take(k).map(|i| (i as u32, row[i])).collect()
            })
            .collect()
    }

    /// Every value, row after row.
    pub fn as_slice(&self) -> &[f32] {
        &self.values
    }

    /// Every value, row after row, without a copy.
    pub fn into_vec(self) -> Vec<f32> {
        self.values
    }

    /// The rows as vectors of their own (a copy).
    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        self.iter_rows().map(<[f32]>::to_vec).collect()
    }
}

impl Deref for Predictions {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.values
    }
}

impl From<Predictions> for Vec<f32> {
    fn from(p: Predictions) -> Vec<f32> {
        p.values
    }
}

/// The index of the largest value (the first, on ties). NaN never wins: it is skipped, wherever it
/// is; a row of NaN only gives 0.
pub fn argmax(values: &[f32]) -> usize {
    let mut best: Option<usize> = None;
    for (i, &v) in values.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|b| v > values[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(0)
}

/// Larger first, NaN after every number (as in [`argmax`], NaN never ranks above a value).
fn larger_first(a: f32, b: f32) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => b.total_cmp(&a),
        (nan_a, nan_b) => nan_a.cmp(&nan_b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_their_questions() {
        let p = Predictions::new(vec![0.5, 0.5, 0.2, 0.8], 2).unwrap();
        assert_eq!(p.argmax(), [0, 1], "a tie goes to the first");
        assert_eq!(p.top_k(5)[1], [(1, 0.8), (0, 0.2)]);
        assert_eq!(p.top_k(1), [vec![(0, 0.5)], vec![(1, 0.8)]]);
        assert_eq!(p.to_rows(), [vec![0.5, 0.5], vec![0.2, 0.8]]);
        assert_eq!(p.get_row(2), None);
        assert_eq!(p.len(), 4, "the flat view");
        assert!(Predictions::new(vec![1.0; 3], 2).is_none());
        assert!(Predictions::new(vec![], 0).is_none());
    }

    /// A NaN at index 0 won: every later value was compared against it, and `v > NaN` is false.
    #[test]
    fn nan_never_wins_wherever_it_is() {
        let nan = f32::NAN;
        assert_eq!(argmax(&[nan, 0.2, 0.7, 0.1]), 2);
        assert_eq!(argmax(&[0.2, nan, 0.7]), 2);
        assert_eq!(argmax(&[0.9, 0.05, nan]), 0);
        assert_eq!(argmax(&[nan, -3.0, -1.0, -1.0]), 2, "the first on ties, past a leading NaN");
        assert_eq!(argmax(&[nan, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[nan, nan]), 0, "nothing but NaN");
        assert_eq!(argmax(&[]), 0);
        let p = Predictions::new(vec![nan, 0.25, 0.75, 0.5, -nan, 0.5], 3).unwrap();
        assert_eq!(p.argmax(), [2, 0]);
        let top: Vec<Vec<u32>> = p.top_k(3).iter().map(|r| r.iter().map(|&(i, _)| i).collect()).collect();
        assert_eq!(top, [vec![2, 1, 0], vec![0, 2, 1]], "NaN ranks last, of either sign");
    }
}
