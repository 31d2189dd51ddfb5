//! Loading data sets: the real archives in `assets/`, every kind of bad file (each error must name
//! the file and the array), and the transforms (scale, standardise, split, subset).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use npyz::npz::NpzWriter;
use npyz::{AutoSerialize, WriteOptions, WriterBuilder};
use wgnn::data::{load_mnist, Dataset, Features};
use wgnn::internals::rng::Rng;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, WgnnError};

/// A fresh folder per test, so tests running in parallel never share a file.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgnn-data-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_npy<T: AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) {
    let file = BufWriter::new(File::create(path).unwrap());
    let mut w = WriteOptions::new().default_dtype().shape(shape).writer(file).begin_nd().unwrap();
    w.extend(data.iter().cloned()).unwrap();
    w.finish().unwrap();
}

/// One array of an .npz under construction.
fn add<T: AutoSerialize + Copy>(npz: &mut NpzWriter<BufWriter<File>>, name: &str, shape: &[u64], data: &[T]) {
    let mut w = npz.array::<T>(name, Default::default()).unwrap().default_dtype().shape(shape).begin_nd().unwrap();
    w.extend(data.iter().cloned()).unwrap();
    w.finish().unwrap();
}

/// A valid archive: `x` u8 (4, 2, 3), `y` i64 (4,) with labels 0..=2.
fn small_npz(path: &Path) {
    let mut npz = NpzWriter::create(path).unwrap();
    add(&mut npz, "x", &[4, 2, 3], &(0..24u8).collect::<Vec<_>>());
    add(&mut npz, "y", &[4], &[0i64, 2, 1, 2]);
}

fn err_text<T: std::fmt::Debug>(r: wgnn::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} should mention {p:?}");
    }
}

#[test]
fn mnist_has_the_documented_shapes_and_class_counts() {
    let (train, test) = load_mnist("assets/mnist.npz").unwrap();
    assert_eq!((train.rows, train.feature_dim, train.classes), (60000, 784, 10));
    assert_eq!((test.rows, test.feature_dim, test.classes), (10000, 784, 10));
    assert!(matches!(train.features, Features::U8(_)), "u8 pixels must stay u8");
    assert_eq!(train.class_counts().unwrap(), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert_eq!(test.class_counts().unwrap(), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    assert!(train.source.contains("mnist.npz") && train.source.contains("x_train"));
    // Scaled u8 reads back as x / 255.
    let Features::U8(raw) = &train.features else { unreachable!() };
    let row = train.row_f32(7).unwrap();
    for (j, v) in row.iter().enumerate() {
        assert_eq!(*v, raw[7 * 784 + j] as f32 * (1.0 / 255.0));
    }
    assert!(row.iter().all(|v| (0.0..=1.0).contains(v)) && row.iter().any(|&v| v > 0.9));
    // The terminal drawing of a digit: a frame around 28 lines of 28 double-width pixels.
    let art = wgnn::display::render_image(&row, 28, 28);
    assert_eq!(art.lines().count(), 30);
    assert!(art.lines().all(|l| l.chars().count() == 58));
    assert!(art.contains('█') && art.contains("  "));
}

#[test]
fn sign_digits_npz_has_sorted_labels_and_loads_from_the_kaggle_npy_layout() {
    let d = Dataset::from_npz("assets/sign_digits.npz", "x", "y").unwrap();
    assert_eq!((d.rows, d.feature_dim, d.classes), (2062, 64 * 64, 10));
    assert!(d.labels[..205].iter().all(|&l| l == 0));
    assert!(d.labels[205..411].iter().all(|&l| l == 1));
    assert_eq!(d.labels[411], 2);
    // The Kaggle copy: X.npy float32 (2062, 64, 64) in [0, 1], Y.npy float64 one-hot (2062, 10).
    let dir = temp_dir("kaggle");
    let x = d.clone().scaled(1.0 / 255.0).to_f32();
    write_npy(&dir.join("X.npy"), &[2062, 64, 64], &x);
    let one_hot: Vec<f64> = d.labels.iter().flat_map(|&l| (0..10).map(move |c| (c == l) as u8 as f64)).collect();
    write_npy(&dir.join("Y.npy"), &[2062, 10], &one_hot);
    let k = Dataset::from_npy(dir.join("X.npy"), dir.join("Y.npy")).unwrap();
    assert_eq!((k.rows, k.feature_dim, k.classes), (2062, 4096, 10));
    assert!(matches!(k.features, Features::F32(_)));
    assert_eq!(k.labels, d.labels, "argmax of the one-hot rows");
    assert_eq!(k.to_f32(), x);
    assert!(k.source.contains("X.npy"));
}

#[test]
fn integer_label_dtypes_and_f64_features_load() {
    let dir = temp_dir("dtypes");
    let p = dir.join("ok.npz");
    let mut npz = NpzWriter::create(&p).unwrap();
    add(&mut npz, "x", &[3, 2], &[0.5f64, 1.0, 1.5, 2.0, 2.5, 3.0]);
    add(&mut npz, "y8", &[3], &[1u8, 0, 3]);
    add(&mut npz, "y16", &[3], &[1i16, 0, 3]);
    add(&mut npz, "y32", &[3], &[1u32, 0, 3]);
    add(&mut npz, "y64", &[3], &[1u64, 0, 3]);
    drop(npz);
    for y in ["y8", "y16", "y32", "y64"] {
        let d = Dataset::from_npz(&p, "x", y).unwrap();
        assert_eq!(d.labels, [1, 0, 3], "{y}");
        assert_eq!(d.classes, 4);
        assert_eq!(d.to_f32(), [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
    }
}

#[test]
fn missing_empty_truncated_and_text_files_name_the_file() {
    let dir = temp_dir("files");
    let missing = dir.join("missing.npz");
    let msg = err_text(Dataset::from_npz(&missing, "x", "y"));
    assert_mentions(&msg, &["missing.npz"]);
    assert!(matches!(Dataset::from_npz(&missing, "x", "y"), Err(WgnnError::Io { .. })));

    let empty = dir.join("empty.npz");
    File::create(&empty).unwrap();
    assert_mentions(&err_text(Dataset::from_npz(&empty, "x", "y")), &["empty.npz", "empty"]);

    let good = dir.join("good.npz");
    small_npz(&good);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.join("truncated.npz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_mentions(&err_text(Dataset::from_npz(&truncated, "x", "y")), &["truncated.npz", "not a valid .npz"]);

    let text = dir.join("notes.npz");
    std::fs::write(&text, "epoch,loss\n1,0.5\n").unwrap();
    assert_mentions(&err_text(Dataset::from_npz(&text, "x", "y")), &["notes.npz", "not a valid .npz"]);

    let text_npy = dir.join("notes.npy");
    std::fs::write(&text_npy, "epoch,loss\n1,0.5\n").unwrap();
    assert_mentions(&err_text(Dataset::from_npy(&text_npy, &text_npy)), &["notes.npy", "not a valid .npy"]);
    assert_mentions(&err_text(Dataset::from_npy(dir.join("no.npy"), &text_npy)), &["no.npy"]);
}

#[test]
fn truncated_npy_data_is_reported() {
    let dir = temp_dir("trunc_npy");
    let x = dir.join("x.npy");
    write_npy(&x, &[4, 3], &[1.0f32; 12]);
    let y = dir.join("y.npy");
    write_npy(&y, &[4], &[0i32, 1, 0, 1]);
    assert_eq!(Dataset::from_npy(&x, &y).unwrap().rows, 4);
    let bytes = std::fs::read(&x).unwrap();
    std::fs::write(&x, &bytes[..bytes.len() - 5]).unwrap();
    assert_mentions(&err_text(Dataset::from_npy(&x, &y)), &["x.npy", "truncated"]);
}

#[test]
fn wrong_array_name_lists_the_names_present() {
    let dir = temp_dir("names");
    let p = dir.join("small.npz");
    small_npz(&p);
    let msg = err_text(Dataset::from_npz(&p, "x_train", "y"));
    assert_mentions(&msg, &["small.npz", "`x_train`", "x, y"]);
    let msg = err_text(Dataset::from_npz(&p, "x", "labels"));
    assert_mentions(&msg, &["small.npz", "`labels`"]);
}

#[test]
fn wrong_dtypes_are_rejected_with_the_array_name() {
    let dir = temp_dir("dtype");
    let p = dir.join("bad.npz");
    let mut npz = NpzWriter::create(&p).unwrap();
    add(&mut npz, "x", &[2, 2], &[1u8, 2, 3, 4]);
    add(&mut npz, "xi", &[2, 2], &[1i32, 2, 3, 4]);
    add(&mut npz, "flags", &[2], &[true, false]);
    add(&mut npz, "yf", &[2], &[0.0f32, 1.0]);
    add(&mut npz, "y", &[2], &[0u8, 1]);
    {
        let dtype = npyz::DType::Plain("<U3".parse().unwrap());
        let mut w = npz.array::<str>("names", Default::default()).unwrap().dtype(dtype).shape(&[2]).begin_nd().unwrap();
        w.push("one").unwrap();
        w.push("two").unwrap();
        w.finish().unwrap();
    }
    drop(npz);
    assert!(Dataset::from_npz(&p, "x", "y").is_ok());
    assert_mentions(&err_text(Dataset::from_npz(&p, "x", "flags")), &["bad.npz", "`flags`", "|b1"]);
    assert_mentions(&err_text(Dataset::from_npz(&p, "x", "names")), &["bad.npz", "`names`", "U3"]);
    assert_mentions(&err_text(Dataset::from_npz(&p, "names", "y")), &["bad.npz", "`names`"]);
    assert_mentions(&err_text(Dataset::from_npz(&p, "xi", "y")), &["bad.npz", "`xi`", "<i4"]);
    assert_mentions(&err_text(Dataset::from_npz(&p, "x", "yf")), &["bad.npz", "`yf`", "float"]);
}

#[test]
fn wrong_ranks_and_row_counts_are_rejected() {
    let dir = temp_dir("rank");
    let p = dir.join("shapes.npz");
    let mut npz = NpzWriter::create(&p).unwrap();
    add(&mut npz, "x", &[3, 2], &[0u8; 6]);
    add(&mut npz, "x1", &[6], &[0u8; 6]);
    add(&mut npz, "y", &[3], &[0u8, 1, 2]);
    add(&mut npz, "y2", &[3, 1], &[0u8, 1, 2]);
    add(&mut npz, "y4", &[4], &[0u8, 1, 2, 0]);
    drop(npz);
    assert_mentions(&err_text(Dataset::from_npz(&p, "x1", "y")), &["shapes.npz", "`x1`", "rank"]);
    assert_mentions(&err_text(Dataset::from_npz(&p, "x", "y2")), &["shapes.npz", "`y2`", "rank 2"]);
    assert_mentions(&err_text(Dataset::from_npz(&p, "x", "y4")), &["shapes.npz", "`x`", "`y4`", "3 rows", "4"]);
}

#[test]
fn negative_labels_and_labels_past_classes_name_the_row() {
    let dir = temp_dir("labels");
    let p = dir.join("labels.npz");
    let mut npz = NpzWriter::create(&p).unwrap();
    add(&mut npz, "x", &[3, 1], &[0u8; 3]);
    add(&mut npz, "y", &[3], &[0i32, 5, 1]);
    add(&mut npz, "neg", &[3], &[0i32, 1, -1]);
    drop(npz);
    assert_mentions(&err_text(Dataset::from_npz(&p, "x", "neg")), &["labels.npz", "`neg`", "-1", "row 2"]);
    let d = Dataset::from_npz(&p, "x", "y").unwrap();
    assert_eq!(d.classes, 6);
    // The label array is named, not the features.
    let msg = err_text(d.clone().with_classes(4));
    assert_mentions(&msg, &["labels.npz:y", "label 5", "row 1", "4 classes"]);
    assert!(!msg.contains("labels.npz:x"), "{msg:?} names the features array");
    assert_eq!(d.clone().with_classes(10).unwrap().classes, 10);
    // Subsets keep both names.
    let s = d.subset(&[1]).unwrap();
    assert_eq!((s.source.as_str(), s.label_source.as_str()), (d.source.as_str(), d.label_source.as_str()));
}

/// An archive in the Keras MNIST layout: 3 training and 2 test rows of 4 pixels.
fn mnist_like<T: AutoSerialize + Copy>(path: &Path, x_train: &[T], y_train: &[u8], x_test: &[T]) {
    let mut npz = NpzWriter::create(path).unwrap();
    add(&mut npz, "x_train", &[3, 2, 2], x_train);
    add(&mut npz, "y_train", &[3], y_train);
    add(&mut npz, "x_test", &[2, 2, 2], x_test);
    add(&mut npz, "y_test", &[2], &[9u8, 0]);
}

#[test]
fn load_mnist_scales_u8_pixels_and_takes_float_pixels_as_given() {
    let dir = temp_dir("mnist_dtypes");
    let floats = dir.join("floats.npz");
    let x_train: Vec<f64> = (0..12).map(|i| i as f64 / 11.0).collect();
    let x_test = [0.0f64, 0.25, 0.5, 1.0, 1.0, 0.5, 0.25, 0.0];
    mnist_like(&floats, &x_train, &[0, 1, 2], &x_test);
    let (train, test) = load_mnist(&floats).unwrap();
    assert_eq!(train.to_f32(), x_train.iter().map(|&v| v as f32).collect::<Vec<_>>(), "float pixels as given");
    assert_eq!(test.to_f32(), x_test.map(|v| v as f32));
    assert_eq!((train.classes, test.labels.as_slice()), (10, [9, 0].as_slice()));
    assert_eq!(train.pixel_range_warning(), None);

    let bytes = dir.join("bytes.npz");
    let x_train: Vec<u8> = (0..12).map(|i| i * 23).collect();
    mnist_like(&bytes, &x_train, &[0, 1, 2], &[0u8, 64, 128, 255, 255, 128, 64, 0]);
    let (train, _) = load_mnist(&bytes).unwrap();
    assert!(matches!(train.features, Features::U8(_)));
    assert_eq!(train.to_f32(), x_train.iter().map(|&v| v as f32 * (1.0 / 255.0)).collect::<Vec<_>>());
    assert_eq!(train.pixel_range_warning(), None);

    // Float pixels still in 0..255 are taken as given too, and the warning says so.
    let raw = dir.join("raw.npz");
    let x_train: Vec<f32> = (0..12).map(|i| (i * 23) as f32).collect();
    mnist_like(&raw, &x_train, &[0, 1, 2], &[0.0f32, 64.0, 128.0, 255.0, 255.0, 128.0, 64.0, 0.0]);
    let (train, _) = load_mnist(&raw).unwrap();
    assert_eq!(train.to_f32(), x_train);
    let warning = train.pixel_range_warning().expect("0..255 float pixels are flagged");
    assert_mentions(&warning, &["raw.npz:x_train", "253", "scaled(1.0 / 255.0)"]);
    assert!(!warning.contains('\n'), "one line");
    assert_eq!(train.scaled(1.0 / 255.0).pixel_range_warning(), None);
}

#[test]
fn load_mnist_names_the_label_array_for_a_bad_label() {
    let dir = temp_dir("mnist_labels");
    let p = dir.join("labels.npz");
    // Label 12 is past MNIST's 10 classes.
    mnist_like(&p, &[0u8; 12], &[0, 12, 1], &[0u8; 8]);
    let msg = err_text(load_mnist(&p));
    assert_mentions(&msg, &["labels.npz", "y_train", "label 12", "row 1", "10 classes"]);
    assert!(!msg.contains("x_train"), "{msg:?} names the features array");

    // A label the model's loss cannot take names the label array too.
    mnist_like(&p, &[0u8; 12], &[0, 7, 1], &[0u8; 8]);
    let (train, _) = load_mnist(&p).unwrap();
    let mut model = Sequential::new(4, 1).dense(5, Activation::Softmax).build(&Backend::Cpu).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let msg = err_text(model.fit(&train, &FitOptions::default()));
    assert_mentions(&msg, &["labels.npz:y_train", "label 7", "row 1", "5 outputs"]);
    assert!(!msg.contains("x_train"), "{msg:?} names the features array");
}

#[test]
fn non_finite_features_are_rejected() {
    let dir = temp_dir("nan");
    let p = dir.join("nan.npz");
    let mut npz = NpzWriter::create(&p).unwrap();
    add(&mut npz, "x", &[2, 2], &[0.0f32, 1.0, f32::NAN, 2.0]);
    add(&mut npz, "xinf", &[2, 2], &[0.0f32, f32::INFINITY, 1.0, 2.0]);
    add(&mut npz, "xbig", &[2, 2], &[0.0f64, 1.0, 1e300, 2.0]);
    add(&mut npz, "y", &[2], &[0u8, 1]);
    drop(npz);
    assert_mentions(&err_text(Dataset::from_npz(&p, "x", "y")), &["nan.npz", "`x`", "NaN", "row 1, feature 0"]);
    assert_mentions(&err_text(Dataset::from_npz(&p, "xinf", "y")), &["`xinf`", "inf", "row 0, feature 1"]);
    assert_mentions(&err_text(Dataset::from_npz(&p, "xbig", "y")), &["`xbig`", "inf"]);
    assert!(Dataset::from_f32(vec![0.0, f32::NAN], vec![0, 1], 1, 2, "t").is_err());
}

#[test]
fn fortran_order_arrays_read_in_row_major_order() {
    let dir = temp_dir("fortran");
    let x = dir.join("x.npy");
    let file = BufWriter::new(File::create(&x).unwrap());
    let mut w =
        WriteOptions::new().default_dtype().shape(&[2, 3]).order(npyz::Order::Fortran).writer(file).begin_nd().unwrap();
    // Row-major [[1, 2, 3], [4, 5, 6]] in column-major storage.
    w.extend([1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0]).unwrap();
    w.finish().unwrap();
    let y = dir.join("y.npy");
    write_npy(&y, &[2], &[0u8, 1]);
    assert_eq!(Dataset::from_npy(&x, &y).unwrap().to_f32(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

/// Row `r` has features `[r, -r]`, so a row can be identified after shuffling.
fn numbered(rows: usize) -> Dataset {
    let x: Vec<f32> = (0..rows).flat_map(|r| [r as f32, -(r as f32)]).collect();
    let y: Vec<u32> = (0..rows).map(|r| (r % 3) as u32).collect();
    Dataset::from_f32(x, y, 2, 3, "numbered").unwrap()
}

#[test]
fn split_is_seeded_disjoint_and_complete() {
    let d = numbered(101);
    let (a, b) = d.split(0.2, 7).unwrap();
    assert_eq!((a.rows, b.rows), (81, 20));
    let ids = |s: &Dataset| -> Vec<usize> { s.to_f32().chunks(2).map(|c| c[0] as usize).collect() };
    let mut all: Vec<usize> = ids(&a).into_iter().chain(ids(&b)).collect();
    // Labels travel with their rows.
    for s in [&a, &b] {
        for (id, &l) in ids(s).iter().zip(&s.labels) {
            assert_eq!(l as usize, id % 3);
        }
    }
    all.sort();
    assert_eq!(all, (0..101).collect::<Vec<_>>(), "disjoint and covering every row");
    let (a2, b2) = d.split(0.2, 7).unwrap();
    assert_eq!((ids(&a2), ids(&b2)), (ids(&a), ids(&b)), "same seed, same split");
    assert_ne!(ids(&d.split(0.2, 8).unwrap().1), ids(&b), "another seed, another split");
    assert_ne!(ids(&b), (81..101).collect::<Vec<_>>(), "shuffled, not a tail");
    assert!(d.split(0.0, 1).is_err() && d.split(1.0, 1).is_err() && d.split(0.001, 1).is_err());
}

#[test]
fn subset_and_select_classes_keep_transforms() {
    let d = numbered(10).scaled(0.5);
    let s = d.subset(&[9, 0, 9]).unwrap();
    assert_eq!(s.to_f32(), [4.5, -4.5, 0.0, 0.0, 4.5, -4.5]);
    assert_eq!(s.labels, [0, 0, 0]);
    assert_eq!(s.classes, 3);
    assert_mentions(&err_text(d.subset(&[3, 10])), &["numbered", "10"]);
    let two = d.select_classes(&[2, 1]).unwrap();
    assert_eq!(two.classes, 2);
    assert_eq!(two.labels, [1, 0, 1, 0, 1, 0]); // rows 1, 2, 4, 5, 7, 8
    assert_eq!(two.row_f32(1).unwrap(), [1.0, -1.0]);
    assert!(d.row_f32(10).is_err());
}

#[test]
fn standardisation_gives_zero_mean_unit_std_per_feature() {
    let mut rng = Rng::new(3);
    let (rows, dim) = (500, 4);
    // Feature j has mean 10·j and std j + 1; feature 3 is constant.
    let x: Vec<f32> = (0..rows)
        .flat_map(|_| {
            (0..dim)
                .map(|j| if j == 3 { 7.0 } else { 10.0 * j as f32 + (j + 1) as f32 * rng.normal() })
                .collect::<Vec<_>>()
        })
        .collect();
    let d = Dataset::from_f32(x.clone(), vec![0; rows], dim, 1, "gauss").unwrap().standardized();
    let f = d.to_f32();
    for j in 0..dim {
        let col: Vec<f64> = f.iter().skip(j).step_by(dim).map(|&v| v as f64).collect();
        let mean = col.iter().sum::<f64>() / rows as f64;
        let std = (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / rows as f64).sqrt();
        assert!(mean.abs() < 1e-4, "feature {j}: mean {mean}");
        if j == 3 {
            assert!(col.iter().all(|&v| v == 0.0), "a constant feature maps to 0");
        } else {
            assert!((std - 1.0).abs() < 1e-4, "feature {j}: std {std}");
        }
    }
    // A second set reuses the first set's statistics.
    let other = Dataset::from_f32(x[..dim].to_vec(), vec![0], dim, 1, "one").unwrap().standardized_like(&d).unwrap();
    assert_eq!(other.row_f32(0).unwrap(), d.row_f32(0).unwrap());
    let wrong = Dataset::from_f32(vec![0.0; 3], vec![0], 3, 1, "three").unwrap();
    assert!(wrong.standardized_like(&d).is_err());
}

#[test]
fn scaled_u8_reads_as_x_over_255() {
    let dir = temp_dir("scaled");
    let p = dir.join("small.npz");
    small_npz(&p);
    let d = Dataset::from_npz(&p, "x", "y").unwrap();
    assert_eq!((d.rows, d.feature_dim, d.classes), (4, 6, 3));
    assert_eq!(d.labels, [0, 2, 1, 2]);
    let f = d.scaled(1.0 / 255.0).to_f32();
    let want: Vec<f32> = (0..24u8).map(|v| v as f32 * (1.0 / 255.0)).collect();
    assert_eq!(f, want);
}

#[test]
fn a_data_set_keeps_its_sample_shape() {
    let dir = temp_dir("sample_shape");
    let p = dir.join("shape.npz");
    mnist_like(&p, &[0u8; 12], &[0, 1, 2], &[0u8; 8]);
    let (train, test) = load_mnist(&p).unwrap();
    assert_eq!((train.sample_shape.as_slice(), test.sample_shape.as_slice()), ([2, 2].as_slice(), [2, 2].as_slice()));
    assert_eq!(train.subset(&[0, 2]).unwrap().sample_shape, [2, 2], "a subset keeps it");
    let channels = train.clone().with_sample_shape(&[2, 2, 1]).unwrap();
    assert_eq!((channels.sample_shape.as_slice(), channels.feature_dim), ([2, 2, 1].as_slice(), 4));
    assert_eq!(channels.to_f32(), train.to_f32(), "the values are unchanged");
    let msg = err_text(train.clone().with_sample_shape(&[3, 1]));
    assert_mentions(&msg, &["[3, 1]", "3 values", "4", "[2, 2]"]);
    assert!(train.with_sample_shape(&[]).is_err());
    let flat = Dataset::from_f32(vec![0.0; 6], vec![0, 1], 3, 2, "flat").unwrap();
    assert_eq!(flat.sample_shape, [3]);
}
