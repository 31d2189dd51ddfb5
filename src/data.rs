//! Data sets read from NumPy `.npz` / `.npy` files.
//!
//! Features stay in the dtype they were stored in (MNIST is `u8`), so the copy uploaded to the GPU
//! is a quarter of the f32 size; the affine map and standardisation are kept as parameters and
//! applied when the features are read as f32 ([`Dataset::to_f32`] on the CPU, the gather kernel on
//! the GPU). Every loading error names the file and, inside an archive, the array.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use npyz::npz::NpzArchive;
use npyz::{DType, Endianness, NpyFile, Order, TypeChar};

use crate::error::{Result, WgnnError};
use crate::rng::Rng;

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
/// [`Dataset::with_targets`].
#[derive(Clone)]
pub struct Dataset {
    /// Row-major `[rows, feature_dim]`.
    pub features: Features,
    /// `[rows]`, each `< classes`.
    pub labels: Vec<u32>,
    pub rows: usize,
    /// All dimensions after the first, flattened (784 = 28·28 for MNIST).
    pub feature_dim: usize,
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
            .field("rows", &self.rows)
            .field("feature_dim", &self.feature_dim)
            .field("classes", &self.classes)
            .field("dtype", &dtype)
            .field("scale", &self.scale)
            .field("shift", &self.shift)
            .field("standardized", &self.standardize.is_some())
            .field("target_dim", &self.targets.as_ref().map(|t| t.dim))
            .finish()
    }
}

/// The MNIST archive in the Keras layout: (train, test), pixels scaled to [0, 1], 10 classes.
pub fn load_mnist(path: impl AsRef<Path>) -> Result<(Dataset, Dataset)> {
    let path = path.as_ref();
    let train = Dataset::from_npz(path, "x_train", "y_train")?.with_classes(10)?.scaled(1.0 / 255.0);
    let test = Dataset::from_npz(path, "x_test", "y_test")?.with_classes(10)?.scaled(1.0 / 255.0);
    Ok((train, test))
}

impl Dataset {
    /// Reads arrays `x_name` / `y_name` from an `.npz` archive. `x`: rank ≥ 2, u8 or f32 (f64 is
    /// converted to f32). `y`: rank 1 of any integer dtype with non-negative values, or a rank-2
    /// float one-hot matrix (turned into argmax labels).
    pub fn from_npz(path: impl AsRef<Path>, x_name: &str, y_name: &str) -> Result<Dataset> {
        let path = path.as_ref();
        let file = open_nonempty(path, "a NumPy .npz archive")?;
        let mut archive = NpzArchive::new(BufReader::new(file))
            .map_err(|e| data_err(path, None, format!("not a valid .npz archive (a zip of .npy files): {e}")))?;
        let mut names: Vec<String> = archive.array_names().map(str::to_string).collect();
        names.sort();
        let x = read_npz_member(&mut archive, path, x_name, &names)?;
        let y = read_npz_member(&mut archive, path, y_name, &names)?;
        let source = format!("{}:{x_name}", path.display());
        assemble(x, y, Origin { path, name: Some(x_name) }, Origin { path, name: Some(y_name) }, source)
    }

    /// Same as [`Dataset::from_npz`] from two `.npy` files, e.g. the Kaggle sign-digits
    /// `X.npy` (float32) and `Y.npy` (float64 one-hot).
    pub fn from_npy(x_path: impl AsRef<Path>, y_path: impl AsRef<Path>) -> Result<Dataset> {
        let (x_path, y_path) = (x_path.as_ref(), y_path.as_ref());
        let x = read_npy_file(x_path)?;
        let y = read_npy_file(y_path)?;
        let source = x_path.display().to_string();
        assemble(x, y, Origin { path: x_path, name: None }, Origin { path: y_path, name: None }, source)
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
        if features.len() != labels.len() * feature_dim {
            return Err(WgnnError::shape(
                OP,
                format!(
                    "{source}: {} feature values for {} labels × feature_dim {feature_dim} (= {})",
                    features.len(),
                    labels.len(),
                    labels.len() * feature_dim
                ),
            ));
        }
        if let Some((index, &value)) = features.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(WgnnError::NonFinite { op: format!("{OP} ({source})"), index, value });
        }
        if let Some(&label) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(WgnnError::LabelOutOfRange { op: format!("{OP} ({source})"), label, classes });
        }
        Ok(Dataset {
            rows: labels.len(),
            features: Features::F32(features),
            labels,
            feature_dim,
            classes,
            scale: 1.0,
            shift: 0.0,
            standardize: None,
            targets: None,
            source: source.to_string(),
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
        if dim == 0 || values.len() != self.rows * dim {
            return Err(WgnnError::shape(
                OP,
                format!(
                    "{}: {} target values for {} rows × target dim {dim} (= {}); dim must be at least 1",
                    self.source,
                    values.len(),
                    self.rows,
                    self.rows * dim
                ),
            ));
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(WgnnError::NonFinite { op: format!("{OP} ({})", self.source), index, value });
        }
        self.targets = Some(Targets { values, dim });
        Ok(self)
    }

    /// The labels as one-hot rows `[rows, width]` (a label ≥ width gives a row of zeros).
    pub fn one_hot(&self, width: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * width];
        for (row, &label) in out.chunks_exact_mut(width.max(1)).zip(&self.labels) {
            if let Some(v) = row.get_mut(label as usize) {
                *v = 1.0;
            }
        }
        out
    }

    /// Sets the number of classes, which may exceed what the labels show (a split that happens to
    /// miss the last class must still have the full output width).
    pub fn with_classes(mut self, classes: usize) -> Result<Dataset> {
        if classes == 0 {
            return Err(data_err(Path::new(&self.source), None, "classes must be at least 1".into()));
        }
        if let Some((row, &label)) = self.labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(data_err(
                Path::new(&self.source),
                None,
                format!(
                    "label {label} at row {row} is out of range for {classes} classes (labels must be 0..{classes})"
                ),
            ));
        }
        self.classes = classes;
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
            return Err(WgnnError::shape(
                "Dataset::standardized_like",
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
            classes: self.classes,
            scale: self.scale,
            shift: self.shift,
            standardize: self.standardize.clone(),
            targets: self.targets.as_ref().map(|t| Targets {
                values: Features::F32(t.values.clone()).gather_rows(rows, t.dim).into_f32(),
                dim: t.dim,
            }),
            source: self.source.clone(),
        })
    }

    /// Rows whose label is in `keep`, relabelled by position in `keep` (keep `[3, 8]`: 3 → 0,
    /// 8 → 1), for smaller experiments such as a two-digit classifier. Float targets are dropped.
    pub fn select_classes(&self, keep: &[u32]) -> Result<Dataset> {
        const OP: &str = "Dataset::select_classes";
        let mut map = vec![None; self.classes];
        for (new, &old) in keep.iter().enumerate() {
            match map.get_mut(old as usize) {
                None => {
                    return Err(WgnnError::invalid(
                        OP,
                        format!("{}: class {old} is out of range for {} classes", self.source, self.classes),
                    ))
                }
                Some(Some(_)) => return Err(WgnnError::invalid(OP, format!("class {old} is listed twice"))),
                Some(slot) => *slot = Some(new as u32),
            }
        }
        let new_label = |l: u32| map.get(l as usize).copied().flatten();
        let rows: Vec<usize> = (0..self.rows).filter(|&r| new_label(self.labels[r]).is_some()).collect();
        if rows.is_empty() {
            return Err(WgnnError::invalid(OP, format!("{}: no rows have a label in {keep:?}", self.source)));
        }
        let mut out = self.subset(&rows)?;
        for l in &mut out.labels {
            // Every kept row's label maps to Some (filtered above).
            *l = new_label(*l).unwrap_or(0);
        }
        out.classes = keep.len();
        // Float targets (one-hot rows of the old classes, say) no longer fit the new labels.
        out.targets = None;
        Ok(out)
    }

    /// Every feature after scale/shift/standardisation, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let d = self.feature_dim;
        (0..self.features.len()).map(|i| self.transform(i, i % d)).collect()
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

    /// How many rows carry each label, `[classes]`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
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

// ---------------------------------------------------------------------------------------------
// Reading arrays

/// Values of one array, widened to a few storage types.
enum Values {
    U8(Vec<u8>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Every integer dtype except u8 (u64 values above i64::MAX saturate; they are invalid labels anyway).
    Int(Vec<i64>),
}

struct Array {
    shape: Vec<usize>,
    dtype: String,
    values: Values,
}

fn data_err(path: &Path, array: Option<&str>, detail: String) -> WgnnError {
    let detail = match array {
        Some(name) => format!("array `{name}`: {detail}"),
        None => detail,
    };
    WgnnError::Data { path: path.to_path_buf(), detail }
}

fn open_nonempty(path: &Path, what: &str) -> Result<File> {
    let io = |source| WgnnError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return Err(data_err(path, None, format!("file is empty (0 bytes); expected {what}")));
    }
    Ok(file)
}

fn read_npz_member(
    archive: &mut NpzArchive<BufReader<File>>,
    path: &Path,
    name: &str,
    names: &[String],
) -> Result<Array> {
    match archive.by_name(name) {
        Ok(Some(npy)) => read_array(npy, path, Some(name)),
        Ok(None) => {
            Err(data_err(path, None, format!("no array named `{name}`; the archive holds: {}", list_names(names))))
        }
        Err(e) => Err(data_err(path, Some(name), format!("not a valid .npy member: {e}"))),
    }
}

fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        "no arrays".to_string()
    } else {
        names.join(", ")
    }
}

fn read_npy_file(path: &Path) -> Result<Array> {
    let file = open_nonempty(path, "a NumPy .npy file")?;
    let npy =
        NpyFile::new(BufReader::new(file)).map_err(|e| data_err(path, None, format!("not a valid .npy file: {e}")))?;
    read_array(npy, path, None)
}

/// Reads the raw bytes and decodes them by dtype, instead of npyz's per-element reader: faster
/// for 47 M MNIST pixels, and a corrupt header cannot make us preallocate a huge buffer.
fn read_array<R: Read>(npy: NpyFile<R>, path: &Path, name: Option<&str>) -> Result<Array> {
    let err = |detail: String| data_err(path, name, detail);
    let dtype = npy.dtype();
    let dtype_name = dtype.descr();
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&s| usize::try_from(s))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| err(format!("shape {:?} is too large", npy.shape())))?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &s| acc.checked_mul(s))
        .ok_or_else(|| err(format!("shape {shape:?} is too large")))?;
    let supported = "expected u8, f32 or f64 features, or integer labels";
    let ts = match &dtype {
        DType::Plain(ts) => ts.clone(),
        _ => return Err(err(format!("unsupported dtype {dtype_name} (a structured array); {supported}"))),
    };
    let size = ts.size_field() as usize;
    let kind = match (ts.type_char(), size) {
        (TypeChar::Uint, 1 | 2 | 4 | 8) | (TypeChar::Int, 1 | 2 | 4 | 8) | (TypeChar::Float, 4 | 8) => ts.type_char(),
        _ => return Err(err(format!("unsupported dtype {dtype_name}; {supported}"))),
    };
    let order = npy.order();
    let nbytes = count.checked_mul(size).ok_or_else(|| err(format!("shape {shape:?} is too large")))?;
    let mut bytes = Vec::with_capacity(nbytes.min(1 << 28));
    npy.into_inner()
        .take(nbytes as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("could not read the data: {e}")))?;
    if bytes.len() < nbytes {
        return Err(err(format!(
            "data is truncated: shape {shape:?} of {dtype_name} needs {nbytes} bytes, found {}",
            bytes.len()
        )));
    }
    let big = ts.endianness() == Endianness::Big;
    macro_rules! decode {
        ($t:ty) => {
            bytes
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| {
                    let mut a = [0u8; std::mem::size_of::<$t>()];
                    a.copy_from_slice(c);
                    if big {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }
                })
                .collect::<Vec<$t>>()
        };
    }
    let values = match (kind, size) {
        (TypeChar::Uint, 1) => Values::U8(bytes),
        (TypeChar::Uint, 2) => Values::Int(decode!(u16).into_iter().map(i64::from).collect()),
        (TypeChar::Uint, 4) => Values::Int(decode!(u32).into_iter().map(i64::from).collect()),
        (TypeChar::Uint, _) => {
            Values::Int(decode!(u64).into_iter().map(|v| i64::try_from(v).unwrap_or(i64::MAX)).collect())
        }
        (TypeChar::Int, 1) => Values::Int(bytes.iter().map(|&b| b as i8 as i64).collect()),
        (TypeChar::Int, 2) => Values::Int(decode!(i16).into_iter().map(i64::from).collect()),
        (TypeChar::Int, 4) => Values::Int(decode!(i32).into_iter().map(i64::from).collect()),
        (TypeChar::Int, _) => Values::Int(decode!(i64)),
        (_, 4) => Values::F32(decode!(f32)),
        _ => Values::F64(decode!(f64)),
    };
    let values = if order == Order::Fortran && shape.len() > 1 {
        match values {
            Values::U8(v) => Values::U8(fortran_to_c(&v, &shape)),
            Values::F32(v) => Values::F32(fortran_to_c(&v, &shape)),
            Values::F64(v) => Values::F64(fortran_to_c(&v, &shape)),
            Values::Int(v) => Values::Int(fortran_to_c(&v, &shape)),
        }
    } else {
        values
    };
    Ok(Array { shape, dtype: dtype_name, values })
}

/// Reorders a column-major (Fortran) array into row-major order.
fn fortran_to_c<T: Copy>(v: &[T], shape: &[usize]) -> Vec<T> {
    // Column-major stride of each axis.
    let mut fstride = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        fstride[k] = fstride[k - 1] * shape[k - 1];
    }
    let mut index = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(v.len());
    for _ in 0..v.len() {
        out.push(v[index.iter().zip(&fstride).map(|(i, s)| i * s).sum::<usize>()]);
        // Advance the row-major index, last axis fastest.
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            if index[k] < shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Building a data set from two arrays

/// Where each array came from, for messages: (file, array name inside an archive).
struct Origin<'a> {
    path: &'a Path,
    name: Option<&'a str>,
}

impl Origin<'_> {
    fn err(&self, detail: String) -> WgnnError {
        data_err(self.path, self.name, detail)
    }
}

fn assemble(x: Array, y: Array, xo: Origin, yo: Origin, source: String) -> Result<Dataset> {
    if x.shape.len() < 2 {
        return Err(xo.err(format!("features must have rank ≥ 2 (rows, features...), got shape {:?}", x.shape)));
    }
    let rows = x.shape[0];
    let feature_dim: usize = x.shape[1..].iter().product();
    if rows == 0 || feature_dim == 0 {
        return Err(xo.err(format!("features are empty (shape {:?})", x.shape)));
    }
    let features = match x.values {
        Values::U8(v) => Features::U8(v),
        Values::F32(v) => Features::F32(v),
        Values::F64(v) => Features::F32(v.into_iter().map(|f| f as f32).collect()),
        Values::Int(_) => return Err(xo.err(format!("unsupported feature dtype {}; expected u8, f32 or f64", x.dtype))),
    };
    if let Features::F32(v) = &features {
        if let Some((i, f)) = v.iter().enumerate().find(|(_, f)| !f.is_finite()) {
            return Err(xo.err(format!(
                "non-finite feature value {f} at row {}, feature {} (features must be finite)",
                i / feature_dim,
                i % feature_dim
            )));
        }
    }
    let labels = labels_from(y, &yo)?;
    if labels.len() != rows {
        return Err(WgnnError::Data {
            path: xo.path.to_path_buf(),
            detail: format!(
                "row counts differ: features {} have {rows} rows but labels {} have {}",
                describe(&xo),
                describe(&yo),
                labels.len()
            ),
        });
    }
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(1);
    Ok(Dataset {
        features,
        labels,
        rows,
        feature_dim,
        classes,
        scale: 1.0,
        shift: 0.0,
        standardize: None,
        targets: None,
        source,
    })
}

fn describe(o: &Origin) -> String {
    match o.name {
        Some(n) => format!("`{n}`"),
        None => o.path.display().to_string(),
    }
}

/// Integer labels from a rank-1 integer array or a rank-2 float one-hot matrix.
fn labels_from(y: Array, yo: &Origin) -> Result<Vec<u32>> {
    match (y.shape.len(), y.values) {
        (1, Values::U8(v)) => Ok(v.into_iter().map(u32::from).collect()),
        (1, Values::Int(v)) => v
            .iter()
            .enumerate()
            .map(|(row, &l)| {
                u32::try_from(l)
                    .map_err(|_| yo.err(format!("label {l} at row {row} is invalid (labels must be integers 0..2^32)")))
            })
            .collect(),
        (2, Values::F32(v)) => one_hot(v.iter().map(|&f| f as f64), &y.shape, yo),
        (2, Values::F64(v)) => one_hot(v.into_iter(), &y.shape, yo),
        (1, Values::F32(_) | Values::F64(_)) => Err(yo.err(format!(
            "labels have float dtype {} and rank 1; expected integer labels or a rank-2 one-hot matrix",
            y.dtype
        ))),
        (rank, _) => Err(yo.err(format!(
            "labels must be rank 1 (integers) or rank 2 (float one-hot), got rank {rank} {} of shape {:?}",
            y.dtype, y.shape
        ))),
    }
}

fn one_hot(v: impl Iterator<Item = f64>, shape: &[usize], yo: &Origin) -> Result<Vec<u32>> {
    let (rows, classes) = (shape[0], shape[1]);
    if classes == 0 {
        return Err(yo.err(format!("one-hot labels have no columns (shape {shape:?})")));
    }
    let all: Vec<f64> = v.collect();
    (0..rows)
        .map(|r| {
            let row = &all[r * classes..(r + 1) * classes];
            if let Some(f) = row.iter().find(|f| !f.is_finite()) {
                return Err(yo.err(format!("non-finite value {f} in one-hot labels at row {r}")));
            }
            let mut best = 0;
            for (j, &f) in row.iter().enumerate() {
                if f > row[best] {
                    best = j;
                }
            }
            Ok(best as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_order_is_transposed() {
        // Row-major [[0, 1, 2], [3, 4, 5]] stored column-major is 0 3 1 4 2 5.
        assert_eq!(fortran_to_c(&[0, 3, 1, 4, 2, 5], &[2, 3]), vec![0, 1, 2, 3, 4, 5]);
    }

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
