//! The files an example writes: every place is checked before training, so a bad path fails in
//! seconds rather than after the run (with the trained model lost), and the files are written
//! after it — also after a run stopped by a diverging loss, from the weights `fit` put back.
//!
//! A missing folder is created: `--out` and `--checkpoint-dir` themselves, and the folder of a
//! `--save` file. A folder must take a new file (a probe file is created and removed: permission
//! bits alone say nothing when running as root); a file name must not be an existing folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use wgnn::collective::Collective;
use wgnn::internals::atomic_file::temporary_path;
use wgnn::model::{ConsoleProgress, FitOptions, Observer, Sequential};
use wgnn::{Dataset, EpochRecord, History, WgnnError};

/// Creates `dir` (the value of `flag`) if missing and checks that a file can be written there.
pub fn prepare_folder(flag: &str, dir: &Path) -> Result<()> {
    let shown = dir.display();
    if dir.exists() && !dir.is_dir() {
        bail!("{flag} {shown}: not a folder (a file of that name exists)");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{flag} {shown}: cannot create the folder"))?;
    // Named like an atomic write's temporary file, so a leftover one is recognised as such.
    let probe = temporary_path(&dir.join("write-probe"))?;
    std::fs::File::create(&probe).with_context(|| format!("{flag} {shown}: cannot write into the folder"))?;
    std::fs::remove_file(&probe).with_context(|| format!("{flag} {shown}: cannot remove {}", probe.display()))?;
    Ok(())
}

/// Checks that the file `path` (the value of `flag`, or a file in its folder) can be written:
/// not a folder, and its folder created if missing and writable.
pub fn prepare_file(flag: &str, path: &Path) -> Result<()> {
    let shown = path.display();
    if path.is_dir() {
        bail!("{flag} {shown}: is a folder, not a file");
    }
    if path.file_name().is_none() {
        bail!("{flag} {shown}: not a file name");
    }
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    prepare_folder(flag, folder).with_context(|| format!("{flag} {shown}: its folder is not usable"))
}

/// Where `mnist_gpu` writes: `history.csv` and `curves.png` in `--out`, the model to `--save`.
pub struct Outputs {
    pub csv: PathBuf,
    pub png: PathBuf,
    pub model: Option<PathBuf>,
}

impl Outputs {
    /// Checks every place the run will write to, `--checkpoint-dir`'s included, before training.
    /// Data-parallel, the ranks other than 0 write nothing, and check nothing.
    pub fn prepare(out: &Path, save: Option<&Path>, checkpoint_dir: Option<&Path>) -> Result<Outputs> {
        let outputs =
            Outputs { csv: out.join("history.csv"), png: out.join("curves.png"), model: save.map(Into::into) };
        if !super::data_parallel::is_rank0() {
            return Ok(outputs);
        }
        prepare_folder("--out", out)?;
        for file in [&outputs.csv, &outputs.png] {
            prepare_file("--out", file)?;
        }
        if let Some(path) = save {
            prepare_file("--save", path)?;
        }
        if let Some(dir) = checkpoint_dir {
            prepare_folder("--checkpoint-dir", dir)?;
            for name in ["last.safetensors", "best.safetensors"] {
                prepare_file("--checkpoint-dir", &dir.join(name))?;
            }
        }
        Ok(outputs)
    }

    /// What [`Outputs::write`] writes for `history`, in words: "the history of the 2 epochs
    /// completed, its curves and the model as trained so far".
    pub fn described(&self, history: &History) -> String {
        let mut parts = vec![format!("the history of the {} completed", super::count(history.epochs.len(), "epoch"))];
        if !history.epochs.is_empty() {
            parts.push("its curves".into());
        }
        if self.model.is_some() {
            parts.push("the model as trained so far".into());
        }
        let last = parts.pop().unwrap_or_default();
        match parts.is_empty() {
            true => last,
            false => format!("{} and {last}", parts.join(", ")),
        }
    }

    /// Writes the history, its curves (when an epoch was completed) and the model, a line each.
    pub fn write(&self, history: &History, model: &Sequential) -> Result<()> {
        if !super::data_parallel::is_rank0() {
            return Ok(());
        }
        history.write_csv(&self.csv)?;
        say!("wrote {} ({})", self.csv.display(), super::count(history.epochs.len(), "epoch"));
        if history.epochs.is_empty() {
            say!("no {}: no epoch was completed", self.png.display());
        } else {
            history.plot_png(&self.png)?;
            say!("wrote {}", self.png.display());
        }
        if let Some(path) = &self.model {
            model.save(path)?;
            say!("saved the model to {}", path.display());
        }
        Ok(())
    }
}

/// `fit` with the library's console (a bar per epoch, a line per epoch; "mae" for the metric
/// under mean squared error). A run stopped by Ctrl-C or SIGTERM writes the outputs, says so in a
/// line and returns [`super::interrupt::Interrupted`] (exit 130; see `interrupt.rs`). A run
/// stopped by a diverging loss still writes the outputs — the history so far (`resumed`'s epochs
/// and this run's) and the model with the weights `fit` put back — then returns the error; a
/// device limit or shape error names `--batch-size`. With `parallel`, data-parallel over its ranks,
/// the console on rank 0 only.
pub fn fit_writing_outputs(
    model: &mut Sequential,
    train: &Dataset,
    options: &FitOptions,
    resumed: History,
    outputs: &Outputs,
    parallel: Option<&dyn Collective>,
) -> Result<History> {
    // A resumed run whose checkpoint completed every epoch asked for: its outputs, as the run
    // would have written them had it not been stopped before.
    match model.resumed_epoch() {
        Some(done) if done == options.epochs => {
            say!("nothing left to train: the checkpoint completed all {done} epochs; writing the outputs");
            return Ok(resumed);
        }
        Some(done) if done > options.epochs => bail!(
            "--epochs {}: the checkpoint has completed {done} epochs (--epochs counts them all): give --epochs \
             {done} to write its outputs, or more to train further",
            options.epochs
        ),
        _ => {}
    }
    let cancel = super::interrupt::cancel_on_signals()?;
    let options = FitOptions { cancel: Some(&cancel), ..*options };
    let mut console = ConsoleProgress::for_loss(model.loss());
    let fitted = match parallel {
        None => model.fit_with(train, &options, &mut console),
        Some(c) if c.rank() == 0 => model.fit_data_parallel_with(train, &options, c, &mut console),
        Some(c) => model.fit_data_parallel_with(train, &options, c, &mut NoProgress),
    };
    console.clear_bar();
    let checkpoint_last = options.checkpoint.map(|c| c.last_path());
    let batch_size = options.batch_size;
    write_after_fit(model, fitted, console.take_records(), resumed, outputs, checkpoint_last.as_deref(), |e| {
        super::naming_the_batch_size(e, batch_size)
    })
}

/// What follows a `fit` (or `fit_tokens`) whose outcome is `fitted`: a run stopped by a signal
/// writes the outputs and returns [`super::interrupt::Interrupted`]; a run stopped by a
/// diverging loss writes the history so far (`resumed`'s epochs, then `completed`, the records
/// the observer kept) and the model with the weights put back, then returns the error; other
/// errors go through `other` (which names the flag to change). `checkpoint_last`: the
/// checkpoint file the run writes, if any, named in the interrupted line.
pub fn write_after_fit(
    model: &Sequential,
    fitted: wgnn::Result<History>,
    completed: Vec<EpochRecord>,
    resumed: History,
    outputs: &Outputs,
    checkpoint_last: Option<&Path>,
    other: impl FnOnce(WgnnError) -> anyhow::Error,
) -> Result<History> {
    match fitted {
        Ok(history) if history.cancelled_in.is_some() => {
            outputs.write(&history, model)?;
            let kept = match (checkpoint_last, history.epochs.last()) {
                (Some(path), Some(r)) => format!("; {} holds epoch {}", path.display(), r.epoch),
                _ => String::new(),
            };
            say!(
                "interrupted in epoch {}: wrote {}{kept}",
                history.cancelled_in.unwrap_or(0),
                outputs.described(&history)
            );
            Err(super::interrupt::Interrupted.into())
        }
        Ok(history) => Ok(history),
        Err(e @ WgnnError::Training { .. }) => {
            let mut history = resumed;
            history.epochs.extend(completed);
            say!("training stopped (the error follows): writing the outputs, with the weights put back");
            if let Err(write) = outputs.write(&history, model) {
                say_err!("{}", super::error_report(&write));
            }
            Err(e.into())
        }
        Err(e) => Err(other(e)),
    }
}

/// The progress of a rank other than 0: not shown.
pub struct NoProgress;
impl Observer for NoProgress {}
