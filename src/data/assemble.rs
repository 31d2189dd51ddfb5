//! A data set built from two arrays read from files: features and labels (integers, or a float
//! one-hot matrix turned into argmax labels). Errors name the file and array they are about.

use std::path::Path;

use super::classes::inferred_classes;
use super::data_err;
use super::npy::{Array, Values};
use super::{Dataset, Features};
use crate::error::{Result, WgnnError};

/// Where each array came from, for messages: (file, array name inside an archive).
pub(super) struct Origin<'a> {
    pub(super) path: &'a Path,
    pub(super) name: Option<&'a str>,
}

impl Origin<'_> {
    fn err(&self, detail: String) -> WgnnError {
        data_err(self.path, self.name, detail)
    }

    /// For [`Dataset::source`] and [`Dataset::label_source`]: `file.npz:array`, or `file.npy`.
    fn source(&self) -> String {
        match self.name {
            Some(n) => format!("{}:{n}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

pub(super) fn assemble(x: Array, y: Array, xo: Origin, yo: Origin) -> Result<Dataset> {
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
    let classes = inferred_classes(&labels).map_err(|detail| yo.err(detail))?;
    Ok(Dataset {
        features,
        labels,
        rows,
        feature_dim,
        sample_shape: x.shape[1..].to_vec(),
        classes,
        scale: 1.0,
        shift: 0.0,
        standardize: None,
        targets: None,
        source: xo.source(),
        label_source: yo.source(),
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
