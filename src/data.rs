//! Data sets read from NumPy `.npz` / `.npy` files, or made in memory (`data/from_memory.rs`).
//!
//! Features stay in the dtype they were stored in (MNIST is `u8`), so the copy uploaded to the GPU
//! is a quarter of the f32 size; the affine map and standardisation are kept as parameters and
//! applied when the features are read as f32 ([`Dataset::to_f32`] on the CPU, the gather kernel on
//! the GPU). Every loading error names the file and, inside an archive, the array; an archive
//! member is checked whole (its size and CRC-32 against the zip's records) before it is used.

mod assemble;
mod classes;
mod from_memory;
mod npy;
mod tokens;
mod zip_member;

use std::fmt;
use std::path::Path;

use crate::error::{Result, WgnnError};
use crate::host_memory::count_text;
use crate::rng::Rng;
use assemble::{assemble, Origin};
pub use classes::MAX_CLASSES;
pub use from_memory::{FeatureValue, Label, IN_MEMORY};
use npy::{read_npy_file, NpzFile};
pub use tokens::TokenDataset;
pub(crate) use tokens::{check_first_row, check_windows};

/// Features stored as raw u8 (what MNIST is) or f32, row-major `[rows, feature_dim]`.
#[derive(Clone, PartialEq)]
pub enum Features {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl Features {
    fn len(&self) -> usize {
        match self {
            Features::U8(v) => v.len(),
            Features::F32(v) => v.len(),
        }
    }

    /// The stored value at flat index `i`, before scale/shift/standardisation.
    fn raw(&self, i: usize) -> f32 {
        match self {
            Features::U8(v) => v[i] as f32,
            Features::F32(v) => v[i],
        }
    }

    fn into_f32(self) -> Vec<f32> {
        match self {
            Features::U8(v) => v.into_iter().map(f32::from).collect(),
            Features::F32(v) => v,
        }
    }

    fn gather_rows(&self, rows: &[usize], dim: usize) -> Features {
        fn pick<T: Copy>(v: &[T], rows: &[usize], dim: usize) -> Vec<T> {
            let mut out = Vec::with_capacity(rows.len() * dim);
            for &r in rows {
                out.extend_from_slice(&v[r * dim..(r + 1) * dim]);
            }
            out
        }
        match self {
            Features::U8(v) => Features::U8(pick(v, rows, dim)),
            Features::F32(v) => Features::F32(pick(v, rows, dim)),
        }
    }
}

/// Float targets per row, row-major `[rows, dim]`: regression values for mean squared error,
/// one-hot or soft class probabilities for categorical cross-entropy, ±1 / 0-1 for hinge.
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    pub values: Vec<f32>,
    pub dim: usize,
}

/// A data set: features with integer labels (classification) and, optionally, float targets
/// (regression, one-hot or soft targets); see [`Dataset::regression`] and
/// [`Dataset::with_targets`]. Made in memory ([`Dataset::new`], [`Dataset::from_rows`],
/// [`Dataset::regression_rows`]) or read from NumPy files ([`Dataset::from_npz`],
/// [`Dataset::from_npy`], [`load_mnist`]).
///
/// ```
/// use wgnn::Dataset;
/// let pixels: Vec<[u8; 4]> = vec![[0, 255, 0, 255], [255, 255, 0, 0], [0, 0, 255, 255]];
/// let data = Dataset::from_rows(&pixels, &[0, 1, 2])?.scaled(1.0 / 255.0).with_sample_shape(&[2, 2])?;
/// assert_eq!(data.shape(), [3, 2, 2]);
/// assert_eq!(data.row_f32(1)?, [1.0, 1.0, 0.0, 0.0]);
/// let (train, test) = data.shuffled(1).split_at(2)?;
/// assert_eq!((train.rows, test.rows, train.classes), (2, 1, 3));
/// # Ok::<(), wgnn::WgnnError>(())
/// ```
#[derive(Clone)]
pub struct Dataset {
    /// Row-major `[rows, feature_dim]`.
    pub features: Features,
    /// `[rows]`, each `< classes`.
    pub labels: Vec<u32>,
    pub rows: usize,
    /// All dimensions after the first, flattened (784 = 28·28 for MNIST).
    pub feature_dim: usize,
    /// The shape of one row before flattening: the features array's dimensions after the first
    /// (`[28, 28]` for MNIST, `[64, 64]` for Sign Language Digits; `[feature_dim]` for data made
    /// in memory). Its product is `feature_dim`; [`Dataset::with_sample_shape`] sets another.
    pub sample_shape: Vec<usize>,
    /// 1 + the largest label, unless set with [`Dataset::with_classes`]; 0 for a regression data
    /// set, which has no class labels.
    pub classes: usize,
    /// Applied when features are read as f32: `x * scale + shift`, then, if set,
    /// `(x - mean[j]) / std[j]`.
    pub scale: f32,
    pub shift: f32,
    pub standardize: Option<(Vec<f32>, Vec<f32>)>,
    /// Float targets, when the data has them; losses that need float targets and find none
    /// derive them from the labels (see [`crate::model::Loss`]).
    pub targets: Option<Targets>,
    /// Where the data came from, e.g. `assets/mnist.npz:x_train`, for messages.
    pub source: String,
    /// Where the labels came from, e.g. `assets/mnist.npz:y_train` (the same as `source` for
    /// data made in memory), for messages about labels.
    pub label_source: String,
}

impl fmt::Debug for Dataset {
    /// A summary: the features themselves are far too long to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dtype = match self.features {
            Features::U8(_) => "u8",
            Features::F32(_) => "f32",
        };
        f.debug_struct("Dataset")
            .field("source", &self.source)
            .field("label_source", &self.label_source)
            .field("rows", &self.rows)
            .field("feature_dim", &self.feature_dim)
            .field("sample_shape", &self.sample_shape)
            .field("classes", &self.classes)
            .field("dtype", &dtype)
            .field("scale", &self.scale)
            .field("shift", &self.shift)
            .field("standardized", &self.standardize.is_some())
            .field("target_dim", &self.targets.as_ref().map(|t| t.dim))
            .finish()
    }
}

/// The MNIST archive in the Keras layout (`x_train`, `y_train`, `x_test`, `y_test`): (train,
/// test), 10 classes. u8 pixels are scaled to [0, 1] (by 1/255); float pixels are taken as given,
/// as Keras takes them, so float pixels still in 0..255 must be scaled by the caller
/// ([`Dataset::scaled`]; [`Dataset::pixel_range_warning`] tells).
pub fn load_mnist(path: impl AsRef<Path>) -> Result<(Dataset, Dataset)> {
    let path = path.as_ref();
    let read = |x_name, y_name| -> Result<Dataset> {
        let data = Dataset::from_npz(path, x_name, y_name)?.with_classes(10)?;
        Ok(match data.features {
            Features::U8(_) => data.scaled(1.0 / 255.0),
            Features::F32(_) => data,
        })
    };
    Ok((read("x_train", "y_train")?, read("x_test", "y_test")?))
}

impl Dataset {
    /// Reads arrays `x_name` / `y_name` from an `.npz` archive. `x`: rank ≥ 2, u8 or f32 (f64 is
    /// converted to f32). `y`: rank 1 of any integer dtype with non-negative values, or a rank-2
    /// float one-hot matrix (turned into argmax labels). Each member is checked against the
    /// archive's records (size, CRC-32) before it is used.
    pub fn from_npz(path: impl AsRef<Path>, x_name: &str, y_name: &str) -> Result<Dataset> {
        let path = path.as_ref();
        let mut archive = NpzFile::open(path)?;
        let x = archive.read(x_name)?;
        let y = archive.read(y_name)?;
        assemble(x, y, Origin { path, name: Some(x_name) }, Origin { path, name: Some(y_name) })
    }

    /// Same as [`Dataset::from_npz`] from two `.npy` files, e.g. the Kaggle sign-digits
    /// `X.npy` (float32) and `Y.npy` (float64 one-hot).
    pub fn from_npy(x_path: impl AsRef<Path>, y_path: impl AsRef<Path>) -> Result<Dataset> {
        let (x_path, y_path) = (x_path.as_ref(), y_path.as_ref());
        let x = read_npy_file(x_path)?;
        let y = read_npy_file(y_path)?;
        assemble(x, y, Origin { path: x_path, name: None }, Origin { path: y_path, name: None })
    }

    /// Features already in memory (row-major `[rows, feature_dim]`), e.g. generated test data.
    pub fn from_f32(
        features: Vec<f32>,
        labels: Vec<u32>,
        feature_dim: usize,
        classes: usize,
        source: &str,
    ) -> Result<Dataset> {
        const OP: &str = "Dataset::from_f32";
        if feature_dim == 0 || labels.is_empty() {
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "{source}: needs at least one row and one feature (rows {}, feature_dim {feature_dim})",
                    labels.len()
                ),
            ));
        }
        if labels.len().checked_mul(feature_dim) != Some(features.len()) {
            return Err(WgnnError::shape_of(
                OP,
                &[("features", &[features.len()]), ("labels", &[labels.len()])],
                format!(
                    "{source}: {} feature values for {} labels × feature_dim {feature_dim} (= {})",
                    features.len(),
                    labels.len(),
                    count_text(labels.len().checked_mul(feature_dim))
                ),
            ));
        }
        if let Some((index, &value)) = features.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(WgnnError::NonFinite { op: format!("{OP} ({source})"), index, value });
        }
        classes::check_class_count(classes).map_err(|detail| WgnnError::invalid(OP, format!("{source}: {detail}")))?;
        if let Some(&label) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(WgnnError::LabelOutOfRange { op: format!("{OP} ({source})"), label, classes });
        }
        Ok(Dataset {
            rows: labels.len(),
            features: Features::F32(features),
            labels,
            feature_dim,
            sample_shape: vec![feature_dim],
            classes,
            scale: 1.0,
            shift: 0.0,
            standardize: None,
            targets: None,
            source: source.to_string(),
            label_source: source.to_string(),
        })
    }

    /// A regression data set: features `[rows, feature_dim]` and float targets
    /// `[rows, target_dim]`, both row-major and finite. It has no class labels (`classes` 0; the
    /// labels are placeholders), so only losses that read float targets accept it.
    pub fn regression(
        features: Vec<f32>,
        targets: Vec<f32>,
        feature_dim: usize,
        target_dim: usize,
        source: &str,
    ) -> Result<Dataset> {
        let rows = features.len().checked_div(feature_dim).unwrap_or(0);
        let mut data =
            Dataset::from_f32(features, vec![0; rows], feature_dim, 1, source)?.with_targets(targets, target_dim)?;
        data.classes = 0;
        Ok(data)
    }

    /// Attaches float targets `[rows, dim]` (row-major, finite), e.g. one-hot rows for
    /// categorical cross-entropy or values for mean squared error.
    pub fn with_targets(mut self, values: Vec<f32>, dim: usize) -> Result<Dataset> {
        const OP: &str = "Dataset::with_targets";
        if dim == 0 || self.rows.checked_mul(dim) != Some(values.len()) {
            return Err(WgnnError::shape_of(
                OP,
                &[("values", &[values.len()]), ("features", &[self.rows, self.feature_dim])],
                format!(
                    "{}: {} target values for {} rows × target dim {dim} (= {}); dim must be at least 1",
                    self.source,
                    values.len(),
                    self.rows,
                    count_text(self.rows.checked_mul(dim))
                ),
            ));
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(WgnnError::NonFinite { op: format!("{OP} ({})", self.source), index, value });
        }
        self.targets = Some(Targets { values, dim });
        Ok(self)
    }

    /// The features' shape: `[rows]` followed by the sample shape (`[60000, 28, 28]` for MNIST).
    pub fn shape(&self) -> Vec<usize> {
        [&[self.rows][..], &self.sample_shape].concat()
    }

    /// The same rows seen as samples of `shape` (e.g. `[28, 28, 1]` for a convolution over MNIST,
    /// Keras' `reshape`); the values and their order are unchanged. Its product must be
    /// `feature_dim`.
    pub fn with_sample_shape(mut self, shape: &[usize]) -> Result<Dataset> {
        let size: usize = shape.iter().product();
        if shape.is_empty() || size != self.feature_dim {
            return Err(WgnnError::shape_of(
                "Dataset::with_sample_shape",
                &[("shape", shape), ("sample", &self.sample_shape)],
                format!(
                    "{}: samples of shape {:?} hold {} values; its rows have {} (shape {:?})",
                    self.source, shape, size, self.feature_dim, self.sample_shape
                ),
            ));
        }
        self.sample_shape = shape.to_vec();
        Ok(self)
    }

    /// Multiplies the f32 view of the features by `scale` (e.g. 1/255 for pixels). Composes with
    /// earlier transforms: after standardisation it scales the standardised values.
    pub fn scaled(mut self, scale: f32) -> Dataset {
        match &mut self.standardize {
            Some((_, std)) => std.iter_mut().for_each(|s| *s /= scale),
            None => {
                self.scale *= scale;
                self.shift *= scale;
            }
        }
        self
    }

    /// Per-feature standardisation with statistics of this data (after scale/shift); a constant
    /// feature keeps std 1 so it maps to 0 instead of dividing by zero.
    pub fn standardized(mut self) -> Dataset {
        let d = self.feature_dim;
        let mut sum = vec![0f64; d];
        for r in 0..self.rows {
            for (j, s) in sum.iter_mut().enumerate() {
                *s += self.affine(r * d + j) as f64;
            }
        }
        let n = self.rows.max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let mut sq = vec![0f64; d];
        for r in 0..self.rows {
            for (j, s) in sq.iter_mut().enumerate() {
                let dx = self.affine(r * d + j) as f64 - mean[j];
                *s += dx * dx;
            }
        }
        let std: Vec<f32> = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let sd = (s / n).sqrt();
                if sd > 1e-7 * m.abs().max(1.0) {
                    sd as f32
                } else {
                    1.0
                }
            })
            .collect();
        self.standardize = Some((mean.iter().map(|&m| m as f32).collect(), std));
        self
    }

    /// Reuses another set's statistics (a test set must be standardised with the training
    /// statistics). Both sets should have the same scale/shift, since the statistics live in
    /// `other`'s scaled space.
    pub fn standardized_like(mut self, other: &Dataset) -> Result<Dataset> {
        if other.feature_dim != self.feature_dim {
            return Err(WgnnError::shape_of(
                "Dataset::standardized_like",
                &[("self", &self.shape()), ("other", &other.shape())],
                format!(
                    "{} has {} features but {} has {}",
                    self.source, self.feature_dim, other.source, other.feature_dim
                ),
            ));
        }
        self.standardize = other.standardize.clone();
        Ok(self)
    }

    /// A seeded shuffled split into `(1 - fraction, fraction)` of the rows, e.g. train/validation.
    /// Both parts must be non-empty.
    pub fn split(&self, fraction: f32, seed: u64) -> Result<(Dataset, Dataset)> {
        const OP: &str = "Dataset::split";
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(WgnnError::invalid(OP, format!("fraction must be in (0, 1), got {fraction}")));
        }
        let second = (self.rows as f64 * fraction as f64).round() as usize;
        if second == 0 || second >= self.rows {
            return Err(WgnnError::invalid(
                OP,
                format!("fraction {fraction} of {} rows of {} leaves an empty part", self.rows, self.source),
            ));
        }
        let mut order: Vec<usize> = (0..self.rows).collect();
        Rng::new(seed).shuffle(&mut order);
        let (a, b) = order.split_at(self.rows - second);
        Ok((self.subset(a)?, self.subset(b)?))
    }

    /// The given rows, in the given order; keeps classes, scale and standardisation.
    pub fn subset(&self, rows: &[usize]) -> Result<Dataset> {
        if rows.is_empty() {
            return Err(WgnnError::invalid("Dataset::subset", format!("{}: no rows selected", self.source)));
        }
        if let Some((i, &r)) = rows.iter().enumerate().find(|(_, &r)| r >= self.rows) {
            return Err(WgnnError::invalid(
                "Dataset::subset",
                format!("{}: row index {r} (entry {i}) is out of range for {} rows", self.source, self.rows),
            ));
        }
        Ok(Dataset {
            features: self.features.gather_rows(rows, self.feature_dim),
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
            rows: rows.len(),
            feature_dim: self.feature_dim,
            sample_shape: self.sample_shape.clone(),
            classes: self.classes,
            scale: self.scale,
            shift: self.shift,
            standardize: self.standardize.clone(),
            targets: self.targets.as_ref().map(|t| Targets {
                values: Features::F32(t.values.clone()).gather_rows(rows, t.dim).into_f32(),
                dim: t.dim,
            }),
            source: self.source.clone(),
            label_source: self.label_source.clone(),
        })
    }

    /// Every feature after scale/shift/standardisation, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let d = self.feature_dim;
        (0..self.features.len()).map(|i| self.transform(i, i % d)).collect()
    }

    /// Checks every feature is finite as read (after scale/shift/standardisation), as `predict`
    /// checks its input; an error naming `op`, the data and the first bad index otherwise.
    pub fn check_finite(&self, op: &str) -> Result<()> {
        let d = self.feature_dim.max(1);
        match (0..self.features.len()).map(|i| (i, self.transform(i, i % d))).find(|(_, v)| !v.is_finite()) {
            Some((index, value)) => Err(WgnnError::NonFinite { op: format!("{op} ({})", self.source), index, value }),
            None => Ok(()),
        }
    }

    /// One row after scale/shift/standardisation (for display or a single prediction).
    pub fn row_f32(&self, row: usize) -> Result<Vec<f32>> {
        if row >= self.rows {
            return Err(WgnnError::invalid(
                "Dataset::row_f32",
                format!("{}: row {row} is out of range for {} rows", self.source, self.rows),
            ));
        }
        let d = self.feature_dim;
        Ok((0..d).map(|j| self.transform(row * d + j, j)).collect())
    }

    /// For pixels meant to be in [0, 1], as [`load_mnist`] gives them: a one-line warning when a
    /// feature read as f32 (after scale and shift, before standardisation) is above 1.5, which
    /// suggests 0..255 pixels stored as floats, taken as given; `None` otherwise. Reads every
    /// feature once.
    pub fn pixel_range_warning(&self) -> Option<String> {
        let max = (0..self.features.len()).map(|i| self.affine(i)).fold(f32::NEG_INFINITY, f32::max);
        (max > 1.5).then(|| {
            format!(
                "{}: features reach {max}, not the [0, 1] of scaled pixels; float pixels are taken as given \
                 (scale 0..255 ones with Dataset::scaled(1.0 / 255.0))",
                self.source
            )
        })
    }

    fn affine(&self, i: usize) -> f32 {
        self.features.raw(i) * self.scale + self.shift
    }

    fn transform(&self, i: usize, j: usize) -> f32 {
        let x = self.affine(i);
        match &self.standardize {
            Some((mean, std)) => (x - mean[j]) / std[j],
            None => x,
        }
    }
}

/// A loading error: the file, and inside an archive the array, then what is wrong.
fn data_err(path: &Path, array: Option<&str>, detail: String) -> WgnnError {
    let detail = match array {
        Some(name) => format!("array `{name}`: {detail}"),
        None => detail,
    };
    WgnnError::Data { path: path.to_path_buf(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_after_standardized_scales_the_standardised_values() {
        let d = Dataset::from_f32(vec![1.0, 3.0], vec![0, 1], 1, 2, "t").unwrap().standardized();
        assert_eq!(d.to_f32(), vec![-1.0, 1.0]);
        assert_eq!(d.scaled(2.0).to_f32(), vec![-2.0, 2.0]);
    }

    #[test]
    fn select_classes_relabels() {
        let d = Dataset::from_f32(vec![0.0, 1.0, 2.0, 3.0], vec![0, 3, 1, 3], 1, 4, "t").unwrap();
        let s = d.select_classes(&[3, 1]).unwrap();
        assert_eq!(s.labels, vec![0, 1, 0]);
        assert_eq!(s.to_f32(), vec![1.0, 2.0, 3.0]);
        assert_eq!(s.classes, 2);
        assert!(d.select_classes(&[9]).is_err());
    }
}
