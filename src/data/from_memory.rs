//! Data sets made in memory, as Keras takes NumPy arrays: rows of `f32` or `u8` features and
//! their labels (any integer type; the class count inferred from them), or float targets for
//! regression; and the row selections a small experiment needs: [`Dataset::take`],
//! [`Dataset::split_at`], [`Dataset::shuffled`] (the seeded fractional split is
//! [`Dataset::split`]). Errors name the row, and the label or value, that is wrong.

use super::classes::inferred_classes;
use super::{Dataset, Features, Targets};
use crate::error::{Result, WgnnError};
use crate::host_memory::count_text;
use crate::rng::Rng;

/// What a data set made in memory is called in messages until [`Dataset::named`] names it.
pub const IN_MEMORY: &str = "data in memory";

impl From<Vec<f32>> for Features {
    fn from(v: Vec<f32>) -> Features {
        Features::F32(v)
    }
}
impl From<&[f32]> for Features {
    fn from(v: &[f32]) -> Features {
        Features::F32(v.to_vec())
    }
}
impl From<&Vec<f32>> for Features {
    fn from(v: &Vec<f32>) -> Features {
        Features::F32(v.clone())
    }
}
impl From<Vec<u8>> for Features {
    fn from(v: Vec<u8>) -> Features {
        Features::U8(v)
    }
}
impl From<&[u8]> for Features {
    fn from(v: &[u8]) -> Features {
        Features::U8(v.to_vec())
    }
}
impl From<&Vec<u8>> for Features {
    fn from(v: &Vec<u8>) -> Features {
        Features::U8(v.clone())
    }
}

impl<const N: usize> From<[f32; N]> for Features {
    fn from(v: [f32; N]) -> Features {
        Features::F32(v.to_vec())
    }
}
impl<const N: usize> From<[u8; N]> for Features {
    fn from(v: [u8; N]) -> Features {
        Features::U8(v.to_vec())
    }
}

/// A feature value a row can hold: `f32`, or `u8` (kept as bytes, a quarter of the memory; scale
/// pixels with [`Dataset::scaled`]).
pub trait FeatureValue: Copy {
    /// The features of `values`, row-major.
    fn features(values: Vec<Self>) -> Features;
}
impl FeatureValue for f32 {
    fn features(values: Vec<f32>) -> Features {
        Features::F32(values)
    }
}
impl FeatureValue for u8 {
    fn features(values: Vec<u8>) -> Features {
        Features::U8(values)
    }
}

/// A class label of any integer type, as NumPy arrays of labels come (`u8`, `i64`, …); it must be
/// non-negative and fit a `u32`.
pub trait Label: Copy + std::fmt::Display {
    /// The label as a class index, or `None` when it is negative or too large.
    fn class_index(self) -> Option<u32>;
}
macro_rules! label_from_integer {
    ($($t:ty),*) => {$(
        impl Label for $t {
            fn class_index(self) -> Option<u32> {
                u32::try_from(self).ok()
            }
        }
    )*};
}
label_from_integer!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// The labels as class indices; an error names the first row whose label is not one.
fn class_indices<L: Label>(op: &str, labels: &[L]) -> Result<Vec<u32>> {
    labels
        .iter()
        .enumerate()
        .map(|(row, &l)| {
            l.class_index().ok_or_else(|| {
                WgnnError::invalid(
                    op,
                    format!("{IN_MEMORY}: label {l} at row {row} is not a class index (labels must be 0, 1, 2, …)"),
                )
            })
        })
        .collect()
}

/// The rows laid end to end; every row must have the first row's length, at least 1.
fn flatten<T: Copy, R: AsRef<[T]>>(op: &str, what: &str, rows: &[R]) -> Result<(Vec<T>, usize)> {
    let Some(first) = rows.first() else {
        return Err(WgnnError::invalid(op, format!("{IN_MEMORY}: no rows")));
    };
    let width = first.as_ref().len();
    if width == 0 {
        return Err(WgnnError::invalid(op, format!("{IN_MEMORY}: row 0 has no {what}")));
    }
    let total = rows.len().checked_mul(width).ok_or_else(|| {
        WgnnError::invalid(op, format!("{IN_MEMORY}: {} rows of {width} {what} overflow a usize", rows.len()))
    })?;
    let mut flat = Vec::with_capacity(total);
    for (row, r) in rows.iter().enumerate() {
        let r = r.as_ref();
        if r.len() != width {
            return Err(WgnnError::shape_of(
                op,
                &[("row", &[r.len()]), ("row 0", &[width])],
                format!("{IN_MEMORY}: row {row} has {} {what}, row 0 has {width}", r.len()),
            ));
        }
        flat.extend_from_slice(r);
    }
    Ok((flat, width))
}

impl Dataset {
    /// A classification data set from features laid row after row (`rows × feature_dim` values,
    /// `f32` or `u8`, owned or borrowed) and one label per row, of any integer type. The class
    /// count is 1 + the largest label ([`Dataset::with_classes`] sets more); the name in messages
    /// is "data in memory" ([`Dataset::named`] sets another). `u8` features stay bytes (scale
    /// them with [`Dataset::scaled`]).
    ///
    /// ```
    /// use wgnn::Dataset;
    /// // Four points in 2-D, two classes.
    /// let x = vec![0.0, 0.1, 0.2, 0.9, 0.8, 0.1, 0.9, 0.9];
    /// let data = Dataset::new(x, 2, &[0, 1, 0, 1])?;
    /// assert_eq!((data.rows, data.feature_dim, data.classes), (4, 2, 2));
    /// # Ok::<(), wgnn::WgnnError>(())
    /// ```
    pub fn new<L: Label>(
        features: impl Into<Features>,
        feature_dim: usize,
        labels: impl AsRef<[L]>,
    ) -> Result<Dataset> {
        const OP: &str = "Dataset::new";
        let labels = class_indices(OP, labels.as_ref())?;
        in_memory(OP, features.into(), feature_dim, labels)
    }

    /// A classification data set from rows (`&[[f32; 2]]`, `&[Vec<u8>]`, …: the feature count is
    /// the rows' length) and one label per row; otherwise as [`Dataset::new`].
    ///
    /// ```
    /// use wgnn::Dataset;
    /// let points = [[0.0f32, 0.1], [0.2, 0.9], [0.8, 0.1]];
    /// let data = Dataset::from_rows(&points, &[0u8, 1, 2])?.named("points");
    /// assert_eq!((data.rows, data.feature_dim, data.classes), (3, 2, 3));
    /// // A row of another length is an error naming it.
    /// let ragged = [vec![0.0f32, 1.0], vec![2.0]];
    /// let err = Dataset::from_rows(&ragged, &[0, 1]).unwrap_err();
    /// assert!(err.to_string().contains("row 1 has 1 features, row 0 has 2"));
    /// # Ok::<(), wgnn::WgnnError>(())
    /// ```
    pub fn from_rows<T: FeatureValue, R: AsRef<[T]>, L: Label>(rows: &[R], labels: impl AsRef<[L]>) -> Result<Dataset> {
        const OP: &str = "Dataset::from_rows";
        let labels = class_indices(OP, labels.as_ref())?;
        let (flat, width) = flatten(OP, "features", rows)?;
        in_memory(OP, T::features(flat), width, labels)
    }

    /// A regression data set from feature rows and target rows (one target row per feature row;
    /// `&[[f32; 1]]` for one value each): the losses that read float targets
    /// ([`crate::model::Loss::MeanSquaredError`]) train on it. It has no class labels (`classes`
    /// is 0).
    ///
    /// ```
    /// use wgnn::Dataset;
    /// let x = [[0.0f32], [1.0], [2.0]];
    /// let y = [[1.0f32], [3.0], [5.0]];
    /// let data = Dataset::regression_rows(&x, &y)?;
    /// assert_eq!(data.targets.as_ref().map(|t| t.dim), Some(1));
    /// # Ok::<(), wgnn::WgnnError>(())
    /// ```
    pub fn regression_rows<T: FeatureValue, R: AsRef<[T]>, Y: AsRef<[f32]>>(
        rows: &[R],
        targets: &[Y],
    ) -> Result<Dataset> {
        const OP: &str = "Dataset::regression_rows";
        let (flat, width) = flatten(OP, "features", rows)?;
        let (values, dim) = flatten(OP, "targets", targets)?;
        if targets.len() != rows.len() {
            return Err(WgnnError::shape_of(
                OP,
                &[("rows", &[rows.len(), width]), ("targets", &[targets.len(), dim])],
                format!("{IN_MEMORY}: {} feature rows but {} target rows", rows.len(), targets.len()),
            ));
        }
        let mut data = in_memory(OP, T::features(flat), width, vec![0; rows.len()])?.with_targets(values, dim)?;
        data.classes = 0;
        Ok(data)
    }

    /// Sets the name messages use for this data (its `source` and `label_source`).
    pub fn named(mut self, name: &str) -> Dataset {
        self.source = name.to_string();
        self.label_source = name.to_string();
        self
    }

    /// The labels as one-hot float targets `[rows, classes]`, for
    /// [`crate::model::Loss::CategoricalCrossentropy`] (or mean squared error on one-hot rows).
    pub fn with_one_hot_targets(self) -> Result<Dataset> {
        let classes = self.classes;
        let one_hot = self.one_hot(classes)?;
        self.with_targets(one_hot, classes)
    }

    /// The first `n` rows (all of them when there are fewer), like Keras' and iterators' `take`;
    /// `n` must be at least 1.
    ///
    /// ```
    /// use wgnn::Dataset;
    /// let data = Dataset::new(vec![1.0f32, 2.0, 3.0], 1, &[0, 1, 0])?;
    /// assert_eq!(data.take(2)?.to_f32(), [1.0, 2.0]);
    /// assert_eq!(data.take(10)?.rows, 3);
    /// # Ok::<(), wgnn::WgnnError>(())
    /// ```
    pub fn take(&self, n: usize) -> Result<Dataset> {
        if n == 0 {
            return Err(WgnnError::invalid("Dataset::take", format!("{}: take(0) selects no rows", self.source)));
        }
        self.subset(&(0..n.min(self.rows)).collect::<Vec<_>>())
    }

    /// The first `n` rows and the rest, in order (shuffle first with [`Dataset::shuffled`], or use
    /// [`Dataset::split`] for a shuffled fraction); both parts must be non-empty.
    ///
    /// ```
    /// use wgnn::Dataset;
    /// let data = Dataset::new(vec![1.0f32, 2.0, 3.0], 1, &[0, 1, 0])?;
    /// let (train, test) = data.split_at(2)?;
    /// assert_eq!((train.to_f32(), test.to_f32()), (vec![1.0, 2.0], vec![3.0]));
    /// # Ok::<(), wgnn::WgnnError>(())
    /// ```
    pub fn split_at(&self, n: usize) -> Result<(Dataset, Dataset)> {
        if n == 0 || n >= self.rows {
            return Err(WgnnError::invalid(
                "Dataset::split_at",
                format!("{}: splitting {} rows at {n} leaves an empty part", self.source, self.rows),
            ));
        }
        let first: Vec<usize> = (0..n).collect();
        let rest: Vec<usize> = (n..self.rows).collect();
        Ok((self.subset(&first)?, self.subset(&rest)?))
    }

    /// Every row, in an order shuffled from `seed` (the same seed, the same order); labels and
    /// targets move with their rows.
    #[doc(alias = "shuffle")]
    pub fn shuffled(self, seed: u64) -> Dataset {
        let mut order: Vec<usize> = (0..self.rows).collect();
        Rng::new(seed).shuffle(&mut order);
        let dim = self.feature_dim;
        Dataset {
            features: self.features.gather_rows(&order, dim),
            labels: order.iter().map(|&r| self.labels[r]).collect(),
            targets: self
                .targets
                .map(|t| Targets { values: Features::F32(t.values).gather_rows(&order, t.dim).into_f32(), dim: t.dim }),
            ..self
        }
    }
}

/// The data set of `features` (`labels.len()` rows of `feature_dim`) and `labels`, checked: sizes,
/// finite values, the class count inferred.
fn in_memory(op: &str, features: Features, feature_dim: usize, labels: Vec<u32>) -> Result<Dataset> {
    let rows = labels.len();
    if feature_dim == 0 || rows == 0 {
        return Err(WgnnError::invalid(
            op,
            format!("{IN_MEMORY}: needs at least one row and one feature (rows {rows}, feature_dim {feature_dim})"),
        ));
    }
    let expected = rows.checked_mul(feature_dim);
    if expected != Some(features.len()) {
        return Err(WgnnError::shape_of(
            op,
            &[("features", &[features.len()]), ("labels", &[rows])],
            format!(
                "{IN_MEMORY}: {} feature values for {rows} labels × feature_dim {feature_dim} (= {})",
                features.len(),
                count_text(expected)
            ),
        ));
    }
    if let Features::F32(v) = &features {
        if let Some((i, value)) = v.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(WgnnError::invalid(
                op,
                format!(
                    "{IN_MEMORY}: non-finite feature value {value} at row {}, feature {} (features must be finite)",
                    i / feature_dim,
                    i % feature_dim
                ),
            ));
        }
    }
    let classes =
        inferred_classes(&labels).map_err(|detail| WgnnError::invalid(op, format!("{IN_MEMORY}: {detail}")))?;
    Ok(Dataset {
        rows,
        features,
        labels,
        feature_dim,
        sample_shape: vec![feature_dim],
        classes,
        scale: 1.0,
        shift: 0.0,
        standardize: None,
        targets: None,
        source: IN_MEMORY.to_string(),
        label_source: IN_MEMORY.to_string(),
    })
}
