//! A data set's classes: how many there are (inferred from the labels or set), the labels as
//! one-hot rows, the rows per class, and a selection of classes. Every table sized by the class
//! count is refused before it is allocated where it could not be held: a label read as a class
//! index decides how much memory these take.

use std::collections::HashMap;
use std::path::Path;

use super::{data_err, Dataset};
use crate::error::{Result, WgnnError};
use crate::host_memory::{self, checked_bytes, count_text};

/// The most classes a data set may have, 2^24: more than any classification data set has, and a
/// label past it is far more likely an id or a hash than a class index. Tables sized by the class
/// count (one-hot rows, an output layer of that width) would otherwise be sized by that label.
pub const MAX_CLASSES: usize = 1 << 24;

/// The detail of an error for a class count past [`MAX_CLASSES`].
fn too_many(classes: usize) -> String {
    format!("{classes} classes are more than the {MAX_CLASSES} a data set may have")
}

/// The class count the labels imply (1 + the largest, 1 for none), or an error's detail naming
/// the first row with the largest label where that count is past [`MAX_CLASSES`].
pub(super) fn inferred_classes(labels: &[u32]) -> std::result::Result<usize, String> {
    let Some((row, &largest)) = labels.iter().enumerate().rev().max_by_key(|(_, &l)| l) else { return Ok(1) };
    let classes = largest as usize + 1;
    if classes > MAX_CLASSES {
        return Err(format!(
            "label {largest} at row {row} would make {} (labels are class indices 0, 1, 2, …; a label this \
             large is likely an id, not a class)",
            too_many(classes)
        ));
    }
    Ok(classes)
}

/// Checks a class count given by the caller: at least 1, at most [`MAX_CLASSES`].
pub(super) fn check_class_count(classes: usize) -> std::result::Result<(), String> {
    match classes {
        0 => Err("classes must be at least 1".into()),
        c if c > MAX_CLASSES => Err(too_many(c)),
        _ => Ok(()),
    }
}

impl Dataset {
    /// The labels as one-hot rows `[rows, width]` (a label ≥ width gives a row of zeros). An
    /// error, before anything is allocated, where `rows × width` floats overflow or do not fit
    /// the host's memory.
    pub fn one_hot(&self, width: usize) -> Result<Vec<f32>> {
        let len = self.rows.checked_mul(width);
        let what = || {
            format!("{}: one-hot targets [{}, {width}] f32 ({} values)", self.label_source, self.rows, count_text(len))
        };
        host_memory::check_counted("Dataset::one_hot", what, len.and_then(|n| checked_bytes(n, 4)))?;
        // check_counted refused an overflowing length.
        let mut out = vec![0.0; len.unwrap_or(0)];
        for (row, &label) in out.chunks_exact_mut(width.max(1)).zip(&self.labels) {
            if let Some(v) = row.get_mut(label as usize) {
                *v = 1.0;
            }
        }
        Ok(out)
    }

    /// Sets the number of classes, which may exceed what the labels show (a split that happens to
    /// miss the last class must still have the full output width); at most [`MAX_CLASSES`].
    pub fn with_classes(mut self, classes: usize) -> Result<Dataset> {
        check_class_count(classes).map_err(|detail| data_err(Path::new(&self.label_source), None, detail))?;
        if let Some((row, &label)) = self.labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(data_err(
                Path::new(&self.label_source),
                None,
                format!(
                    "label {label} at row {row} is out of range for {classes} classes (labels must be 0..{classes})"
                ),
            ));
        }
        self.classes = classes;
        Ok(self)
    }

    /// Rows whose label is in `keep`, relabelled by position in `keep` (keep `[3, 8]`: 3 → 0,
    /// 8 → 1), for smaller experiments such as a two-digit classifier. Float targets are dropped.
    pub fn select_classes(&self, keep: &[u32]) -> Result<Dataset> {
        const OP: &str = "Dataset::select_classes";
        // A map of the kept classes only: `classes` is a public field, not a size to allocate by.
        let mut map = HashMap::with_capacity(keep.len());
        for (new, &old) in keep.iter().enumerate() {
            if old as usize >= self.classes {
                return Err(WgnnError::invalid(
                    OP,
                    format!("{}: class {old} is out of range for {} classes", self.source, self.classes),
                ));
            }
            if map.insert(old, new as u32).is_some() {
                return Err(WgnnError::invalid(OP, format!("class {old} is listed twice")));
            }
        }
        let rows: Vec<usize> = (0..self.rows).filter(|&r| map.contains_key(&self.labels[r])).collect();
        if rows.is_empty() {
            return Err(WgnnError::invalid(OP, format!("{}: no rows have a label in {keep:?}", self.source)));
        }
        let mut out = self.subset(&rows)?;
        for l in &mut out.labels {
            // Every kept row's label is in the map (filtered above).
            *l = map.get(l).copied().unwrap_or(0);
        }
        out.classes = keep.len();
        // Float targets (one-hot rows of the old classes, say) no longer fit the new labels.
        out.targets = None;
        Ok(out)
    }

    /// How many rows carry each label, `[classes]`: an error, before anything is allocated, where
    /// `classes` (a public field) was set to 0 or past [`MAX_CLASSES`].
    pub fn class_counts(&self) -> Result<Vec<usize>> {
        check_class_count(self.classes)
            .map_err(|detail| WgnnError::invalid("class_counts", format!("{}: {detail}", self.source)))?;
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        Ok(counts)
    }
}
