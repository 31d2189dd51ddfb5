//! One array read from a NumPy `.npy` file or a member of an `.npz` archive, decoded into a few
//! storage types. Archive members are read through [`CheckedMember`], so a damaged member is an
//! error naming the file and the array, never data.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use npyz::zip::result::ZipError;
use npyz::zip::ZipArchive;
use npyz::{DType, Endianness, NpyFile, Order, TypeChar};

use super::data_err;
use super::zip_member::CheckedMember;
use crate::error::{Result, WgnnError};

/// Values of one array, widened to a few storage types.
pub(super) enum Values {
    U8(Vec<u8>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Every integer dtype except u8 (u64 values above i64::MAX saturate; they are invalid labels anyway).
    Int(Vec<i64>),
}

pub(super) struct Array {
    pub(super) shape: Vec<usize>,
    pub(super) dtype: String,
    pub(super) values: Values,
}

fn open_nonempty(path: &Path, what: &str) -> Result<File> {
    let io = |source| WgnnError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return Err(data_err(path, None, format!("file is empty (0 bytes); expected {what}")));
    }
    Ok(file)
}

/// An open `.npz` archive (a zip of `.npy` files, as `np.savez` and `np.savez_compressed` write).
pub(super) struct NpzFile<'p> {
    path: &'p Path,
    zip: ZipArchive<BufReader<File>>,
    /// The array names, sorted, for the message when one is missing.
    names: Vec<String>,
}

impl<'p> NpzFile<'p> {
    pub(super) fn open(path: &'p Path) -> Result<NpzFile<'p>> {
        let file = open_nonempty(path, "a NumPy .npz archive")?;
        let zip = ZipArchive::new(BufReader::new(file))
            .map_err(|e| data_err(path, None, format!("not a valid .npz archive (a zip of .npy files): {e}")))?;
        let mut names: Vec<String> =
            zip.file_names().filter_map(npyz::npz::array_name_from_file_name).map(str::to_string).collect();
        names.sort();
        Ok(NpzFile { path, zip, names })
    }

    /// The array `name`, its member checked whole (size and CRC-32) before any of it is used.
    pub(super) fn read(&mut self, name: &str) -> Result<Array> {
        let path = self.path;
        let err = |detail: String| data_err(path, Some(name), detail);
        let member = npyz::npz::file_name_from_array_name(name);
        // `by_name` unwraps the zip crate's password check and panics on a member that carries an
        // AES field; with a (empty) password the check's failure comes back as a value. The
        // password is ignored for members that are not encrypted.
        let file = match self.zip.by_name_decrypt(&member, b"") {
            Ok(Ok(file)) => file,
            Ok(Err(_)) => return Err(err("the member is encrypted; numpy archives are not".into())),
            Err(ZipError::FileNotFound) => {
                return Err(data_err(
                    path,
                    None,
                    format!("no array named `{name}`; the archive holds: {}", list_names(&self.names)),
                ))
            }
            Err(e) => return Err(err(format!("cannot open the member {member}: {e}"))),
        };
        let mut checked = CheckedMember::new(file).map_err(err)?;
        let array = NpyFile::new(&mut checked)
            .map_err(|e| err(format!("not a valid .npy member: {e}")))
            .and_then(|npy| read_array(npy, path, Some(name)));
        // A damaged member can fail to parse or parse into altered values: its check comes first.
        checked.finish().map_err(err)?;
        array
    }
}

fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        "no arrays".to_string()
    } else {
        names.join(", ")
    }
}

pub(super) fn read_npy_file(path: &Path) -> Result<Array> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_order_is_transposed() {
        // Row-major [[0, 1, 2], [3, 4, 5]] stored column-major is 0 3 1 4 2 5.
        assert_eq!(fortran_to_c(&[0, 3, 1, 4, 2, 5], &[2, 3]), vec![0, 1, 2, 3, 4, 5]);
    }
}
