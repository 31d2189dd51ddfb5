//! Training history: the CSV keeps every number, the plot is a real PNG, write errors name the path.

mod common;

use common::scratch;
use wgnn::{EpochRecord, History, WgnnError};

fn sample(epochs: usize, with_val: bool) -> History {
    let mut h = History::default();
    for e in 1..=epochs {
        let t = e as f32;
        h.push(EpochRecord {
            epoch: e,
            train_loss: 2.3 / t + 0.01234567,
            train_accuracy: 1.0 - 0.9 / (t + 0.3),
            val_loss: with_val.then(|| 2.4 / t + 0.05),
            val_accuracy: with_val.then(|| 1.0 - 0.95 / (t + 0.2)),
            seconds: 1.5 + e as f64 / 3.0,
            val_seconds: if with_val { 0.25 + e as f64 / 9.0 } else { 0.0 },
            samples_per_second: 40000.0 / (1.0 + e as f64 / 7.0),
            skipped_batches: e % 3,
        });
    }
    h
}

/// Parses one CSV line back into a record; empty cells are `None`.
fn parse(line: &str) -> EpochRecord {
    let c: Vec<&str> = line.split(',').collect();
    assert_eq!(c.len(), 9, "{line}");
    let opt = |s: &str| {
        if s.is_empty() {
            None
        } else {
            Some(s.parse::<f32>().unwrap())
        }
    };
    EpochRecord {
        epoch: c[0].parse().unwrap(),
        train_loss: c[1].parse().unwrap(),
        train_accuracy: c[2].parse().unwrap(),
        val_loss: opt(c[3]),
        val_accuracy: opt(c[4]),
        seconds: c[5].parse().unwrap(),
        val_seconds: c[6].parse().unwrap(),
        samples_per_second: c[7].parse().unwrap(),
        skipped_batches: c[8].parse().unwrap(),
    }
}

#[test]
fn csv_round_trips_every_number() {
    for with_val in [true, false] {
        let h = sample(6, with_val);
        let csv = h.to_csv();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some(
                "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds,val_seconds,samples_per_second,\
                 skipped_batches"
            )
        );
        let back: Vec<EpochRecord> = lines.map(parse).collect();
        assert_eq!(back, h.epochs);
        if !with_val {
            assert!(csv.lines().nth(1).unwrap().contains(",,"), "missing validation cells are empty");
        }
    }
    let h = sample(3, true);
    assert_eq!(h.last().map(|r| r.epoch), Some(3));
    let path = std::env::temp_dir().join(format!("wgnn-history-{}.csv", std::process::id()));
    h.write_csv(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), h.to_csv());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn plot_png_writes_a_png() {
    let dir = std::env::temp_dir().join(format!("wgnn-history-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut h = sample(12, true);
    h.stopped_early_at = Some(12);
    for (name, h) in [("full.png", h), ("train_only.png", sample(5, false)), ("one.png", sample(1, true))] {
        let path = dir.join(name);
        h.plot_png(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 1000, "{name}: {} bytes", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}: PNG signature");
    }
}

#[test]
fn write_errors_name_the_path() {
    let h = sample(2, true);
    let bad = std::env::temp_dir().join("wgnn-no-such-folder-xyz").join("h.csv");
    let e = h.write_csv(&bad).unwrap_err();
    assert!(matches!(e, WgnnError::Io { .. }));
    assert!(e.to_string().contains("wgnn-no-such-folder-xyz"), "{e}");
    let e = h.plot_png(bad.with_extension("png")).unwrap_err();
    assert!(matches!(e, WgnnError::Io { .. }), "{e}");
    assert!(e.to_string().contains("h.png"), "{e}");
    assert!(History::default().plot_png(std::env::temp_dir().join("wgnn-empty.png")).is_err());
}

#[test]
fn csv_without_the_val_seconds_column_still_reads() {
    // What wgnn wrote (and checkpoints embedded) before validation was timed apart.
    let old = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds,samples_per_second,skipped_batches\n\
               1,0.5,0.8,0.6,0.75,1.25,4000,2\n";
    let h = History::from_csv(old).unwrap();
    let r = &h.epochs[0];
    assert_eq!((r.seconds, r.val_seconds, r.samples_per_second, r.skipped_batches), (1.25, 0.0, 4000.0, 2));
    assert_eq!((r.val_loss, r.val_accuracy), (Some(0.6), Some(0.75)));
}

#[test]
fn csv_without_the_skipped_column_still_reads() {
    // What wgnn wrote (and checkpoints embedded) before skipped batches were recorded.
    let old =
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds,samples_per_second\n1,0.5,0.8,,,1.25,4000\n";
    let h = History::from_csv(old).unwrap();
    assert_eq!(h.epochs.len(), 1);
    assert_eq!((h.epochs[0].train_loss, h.epochs[0].skipped_batches), (0.5, 0));
    assert_eq!((h.epochs[0].samples_per_second, h.epochs[0].val_seconds), (4000.0, 0.0));
    let err = History::from_csv("epoch,loss\n1,2\n").expect_err("unknown header");
    assert!(matches!(err, WgnnError::InvalidArgument { .. }) && err.to_string().contains("header"), "{err}");
}

#[test]
fn a_failed_plot_leaves_the_old_file_and_no_temporary_one() {
    let dir = scratch("failed-plot");
    // An extension the image encoder does not know: the drawing fails after the file is opened.
    let path = dir.join("curves.xyz");
    std::fs::write(&path, b"the previous plot").unwrap();
    let e = sample(3, true).plot_png(&path).expect_err("no encoder for .xyz");
    assert!(e.to_string().contains("curves.xyz"), "{e}");
    let kept = std::fs::read(&path).unwrap();
    assert_eq!(String::from_utf8_lossy(&kept), "the previous plot", "the old file was overwritten");
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["curves.xyz"], "files left in {}", dir.display());
}

#[test]
fn writes_replace_the_file_instead_of_rewriting_it_in_place() {
    // A hard link to the old file still reads the old bytes afterwards only if the new file was
    // written aside and renamed over the old name (a truncating write would change both).
    let dir = scratch("replace");
    let h = sample(3, true);
    type Writer<'a> = &'a dyn Fn(&std::path::Path) -> wgnn::Result<()>;
    let writers: [(&str, Writer); 2] = [("history.csv", &|p| h.write_csv(p)), ("curves.png", &|p| h.plot_png(p))];
    for (name, write) in writers {
        let path = dir.join(name);
        let link = dir.join(format!("old-{name}"));
        std::fs::write(&path, b"old").unwrap();
        std::fs::hard_link(&path, &link).unwrap();
        write(&path).unwrap();
        let old = std::fs::read(&link).unwrap();
        assert_eq!(String::from_utf8_lossy(&old), "old", "{name} was rewritten in place");
        assert!(std::fs::read(&path).unwrap().len() > 100, "{name} was not written");
    }
    assert_eq!(std::fs::read_to_string(dir.join("history.csv")).unwrap(), h.to_csv());
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["curves.png", "history.csv", "old-curves.png", "old-history.csv"], "files left");
}
