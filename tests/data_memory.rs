//! Data sets made in memory (the Keras way: arrays of rows and labels, the class count inferred)
//! and the row selections a small experiment needs: take, split_at, shuffled.

use wgnn::{Dataset, WgnnError};

/// Spirals as a user makes them in code: two arms of `per_class` points each.
fn spirals(per_class: usize) -> (Vec<[f32; 2]>, Vec<u8>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for class in 0..2u8 {
        for i in 0..per_class {
            let r = i as f32 / per_class as f32;
            let t = 4.0 * r + f32::from(class) * std::f32::consts::PI;
            x.push([r * t.cos(), r * t.sin()]);
            y.push(class);
        }
    }
    (x, y)
}

#[test]
fn rows_and_labels_of_any_integer_type_make_a_data_set() {
    let (x, y) = spirals(5);
    let data = Dataset::from_rows(&x, &y).unwrap();
    assert_eq!((data.rows, data.feature_dim, data.classes, data.sample_shape.clone()), (10, 2, 2, vec![2]));
    assert_eq!(data.labels, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    assert_eq!(&data.to_f32()[2..4], &x[1][..]);
    assert_eq!(data.source, "data in memory");
    // The same from a flat vector, a borrowed slice, u64 labels; more classes than the labels show.
    let flat: Vec<f32> = x.iter().flatten().copied().collect();
    let labels: Vec<u64> = y.iter().map(|&l| u64::from(l)).collect();
    let same = Dataset::new(&flat, 2, &labels).unwrap().with_classes(3).unwrap().named("spirals");
    assert_eq!((same.to_f32(), same.labels.clone(), same.classes), (data.to_f32(), data.labels.clone(), 3));
    assert_eq!(same.source, "spirals");
    let borrowed = Dataset::new(&flat[..], 2, &labels[..]).unwrap();
    assert_eq!(borrowed.to_f32(), data.to_f32());
    let array = Dataset::new([1.0f32, 2.0, 3.0, 4.0], 2, [1u8, 0]).unwrap();
    assert_eq!((array.rows, array.classes, array.to_f32()), (2, 2, vec![1.0, 2.0, 3.0, 4.0]));
}

#[test]
fn u8_rows_stay_bytes_and_scale_like_pixels() {
    let pixels: Vec<Vec<u8>> = vec![vec![0, 255, 64], vec![128, 0, 255]];
    let data = Dataset::from_rows(&pixels, [1i32, 0]).unwrap().scaled(1.0 / 256.0);
    assert!(matches!(data.features, wgnn::data::Features::U8(_)), "{data:?}");
    assert_eq!(data.to_f32(), [0.0, 255.0 / 256.0, 0.25, 0.5, 0.0, 255.0 / 256.0]);
    let flat = Dataset::new(vec![7u8, 8], 1, vec![0usize, 1]).unwrap();
    assert_eq!(flat.to_f32(), [7.0, 8.0]);
}

#[test]
fn bad_rows_and_labels_are_named() {
    let err = Dataset::from_rows(&[[1.0f32, 2.0], [3.0, 4.0]], [0, -2]).unwrap_err();
    assert!(matches!(err, WgnnError::InvalidArgument { .. }), "{err:#?}");
    assert!(err.to_string().contains("label -2 at row 1 is not a class index"), "{err}");

    let ragged = vec![vec![1.0f32, 2.0], vec![3.0, 4.0], vec![5.0]];
    let err = Dataset::from_rows(&ragged, [0, 1, 0]).unwrap_err();
    assert_eq!(err.operand_shape("row"), Some(&[1][..]), "{err}");
    assert!(err.to_string().contains("row 2 has 1 features, row 0 has 2"), "{err}");

    let err = Dataset::from_rows(&[[1.0f32, f32::NAN]], [0]).unwrap_err();
    assert!(err.to_string().contains("non-finite feature value NaN at row 0, feature 1"), "{err}");

    let err = Dataset::new(vec![1.0f32, 2.0, 3.0], 2, [0, 1]).unwrap_err();
    assert!(err.to_string().contains("3 feature values for 2 labels × feature_dim 2 (= 4)"), "{err}");
    assert!(Dataset::new(vec![1.0f32; 2], 0, [0, 1]).is_err(), "feature_dim 0");
    assert!(Dataset::from_rows::<f32, [f32; 2], u32>(&[], [0u32; 0]).is_err(), "no rows");
    // Labels past the set number of classes name the row.
    let err = Dataset::new(vec![1.0f32, 2.0], 1, [0, 4]).unwrap().with_classes(3).unwrap_err();
    assert!(err.to_string().contains("label 4 at row 1 is out of range for 3 classes"), "{err}");
}

#[test]
fn regression_rows_carry_float_targets() {
    let x = [[0.0f32, 1.0], [1.0, 0.0], [2.0, 2.0]];
    let y = [[1.0f32, -1.0], [2.0, 0.5], [3.0, 0.0]];
    let data = Dataset::regression_rows(&x, &y).unwrap();
    let targets = data.targets.as_ref().unwrap();
    assert_eq!((targets.dim, targets.values.clone(), data.classes), (2, vec![1.0, -1.0, 2.0, 0.5, 3.0, 0.0], 0));
    let err = Dataset::regression_rows(&x, &y[..2]).unwrap_err();
    assert!(err.to_string().contains("3 feature rows but 2 target rows"), "{err}");
    let err = Dataset::regression_rows(&x, &[[1.0f32], [f32::INFINITY], [0.0]]).unwrap_err();
    assert!(matches!(err, WgnnError::NonFinite { index: 1, .. }), "{err}");
}

#[test]
fn one_hot_targets_follow_the_labels() {
    let data = Dataset::new(vec![0.0f32, 1.0, 2.0], 1, [2, 0, 1]).unwrap().with_one_hot_targets().unwrap();
    let t = data.targets.as_ref().unwrap();
    assert_eq!(t.dim, 3);
    assert_eq!(t.values, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn take_split_at_and_shuffled_select_rows() {
    let data =
        Dataset::new((0..10).map(|v| v as f32).collect::<Vec<_>>(), 1, (0..10u32).map(|l| l % 3).collect::<Vec<_>>())
            .unwrap()
            .with_one_hot_targets()
            .unwrap();
    assert_eq!(data.take(3).unwrap().to_f32(), [0.0, 1.0, 2.0]);
    assert_eq!(data.take(50).unwrap().rows, 10, "take never asks for more rows than there are");
    assert!(data.take(0).is_err());

    let (a, b) = data.split_at(7).unwrap();
    assert_eq!((a.rows, b.rows, b.to_f32()), (7, 3, vec![7.0, 8.0, 9.0]));
    assert_eq!(b.labels, [1, 2, 0]);
    for n in [0, 10, 11] {
        let err = data.split_at(n).unwrap_err();
        assert!(err.to_string().contains("leaves an empty part"), "{n}: {err}");
    }

    let shuffled = data.clone().shuffled(5);
    assert_eq!(shuffled.to_f32(), data.clone().shuffled(5).to_f32(), "the same seed, the same order");
    assert_ne!(shuffled.to_f32(), data.to_f32(), "seed 5 moves some of ten rows");
    assert_ne!(shuffled.to_f32(), data.clone().shuffled(6).to_f32());
    let mut values = shuffled.to_f32();
    values.sort_by(f32::total_cmp);
    assert_eq!(values, data.to_f32(), "every row once");
    // Labels and targets move with their rows.
    let targets = shuffled.targets.as_ref().unwrap();
    for (row, &v) in shuffled.to_f32().iter().enumerate() {
        let label = (v as u32) % 3;
        assert_eq!(shuffled.labels[row], label);
        assert_eq!(targets.values[row * 3 + label as usize], 1.0);
    }
}
