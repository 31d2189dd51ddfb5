//! Saving and loading models and checkpoints.
//!
//! One format for both: a [safetensors](https://github.com/huggingface/safetensors) file, so
//! PyTorch (`safetensors.torch.load_file`) and NumPy read the weights without wgnn.
//!
//! Tensors (f32, little-endian), named by the layer's index in the model, as PyTorch's
//! `nn.Sequential` names them:
//! - dense layers: `layers.{i}.weight` [inputs, units] (x·W; PyTorch's `nn.Linear.weight` is the
//!   transpose), `layers.{i}.bias` [units] (unless the layer has none)
//! - batch norms: `layers.{i}.beta`, `layers.{i}.gamma`, `layers.{i}.running_mean`,
//!   `layers.{i}.running_var` [channels]
//! - checkpoints only: `optimizer.{slot}.layers.{i}.{name}` for every trained tensor, the same
//!   shapes, with slot `m` and `v` for Adam and AdamW, `velocity` for SGD with momentum,
//!   `square_avg` (and `momentum_buf`) for RMSprop, `sum` for Adagrad, `square_avg` and
//!   `acc_delta` for Adadelta.
//!
//! Metadata (the file header's string → string map):
//! - `wgnn.model`: JSON `{"format": 2, "input_shape": [784], "seed": 42, "layers": [{"type":
//!   "dense", "units": 64, "activation": "relu", "use_bias": true}, {"type": "dropout", "rate":
//!   0.2}, …]}`: enough to rebuild the model; a compiled model's also has `"compile": {"loss":
//!   "binary_crossentropy", "optimizer": {…}}`, which `load` needs to predict and evaluate as the
//!   saved model did. The schema is the serde types in `model/saved.rs`; files of format 1 (dense
//!   layers with their dropout and batch norm, `input_dim`) still load. Format 3, written for
//!   models with residual blocks only, adds `{"type": "add", "from": 2, "projection": {…}}`.
//! - checkpoints only: `wgnn.checkpoint`: JSON `{"epoch": 2, "step": 3750, "loss":
//!   "sparse_categorical_crossentropy", "optimizer": {"kind": "adam", "lr": 0.001, …}}` (epoch: the
//!   epochs completed; step: Adam's global step t), and `wgnn.history`: the history so far as
//!   [`History::to_csv`] text.
//!
//! Every write goes to a temporary file in the destination's folder, is flushed to disk, then
//! renamed over the destination: a crash at any moment leaves either the old file or the new one.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::saved::{
    from_json, to_json, Architecture, SavedCheckpoint, SavedCompile, SavedFormat, SavedLayer, SavedModel, SavedModelV1,
    FORMAT,
};
use super::{Backend, Checkpointing, CpuState, FitRecord, Loss, Optimizer, ResumePoint, Sequential, State};
use crate::atomic_file::write_atomic;
use crate::error::{Result, WgnnError};
use crate::history::History;

const MODEL_KEY: &str = "wgnn.model";
const CHECKPOINT_KEY: &str = "wgnn.checkpoint";
const HISTORY_KEY: &str = "wgnn.history";

fn data_err(path: &Path, detail: impl Into<String>) -> WgnnError {
    WgnnError::Data { path: path.to_path_buf(), detail: detail.into() }
}

/// A model's layers in one line, `[784] → dense(64, relu) → dense(10, softmax)`, for messages.
fn describe(input_shape: &[usize], layers: &[crate::layers::Layer]) -> String {
    let mut s = format!("{input_shape:?}");
    for l in layers {
        s.push_str(&format!(" → {}", l.describe()));
    }
    s
}

fn optimizer_slots(optimizer: &Optimizer) -> &'static [&'static str] {
    match optimizer {
        Optimizer::Adam(_) | Optimizer::AdamW(_) => &["m", "v"],
        Optimizer::Sgd(c) if c.momentum != 0.0 => &["velocity"],
        Optimizer::Sgd(_) => &[],
        Optimizer::RmsProp(c) if c.momentum != 0.0 => &["square_avg", "momentum_buf"],
        Optimizer::RmsProp(_) => &["square_avg"],
        Optimizer::Adagrad(_) => &["sum"],
        Optimizer::Adadelta(_) => &["square_avg", "acc_delta"],
    }
}

/// Creates the folder `path` is to be written in, if missing (as `mkdir -p`); an error names the
/// folder, not the file.
fn create_parent_folder(path: &Path) -> Result<()> {
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|source| WgnnError::Io { path: dir.to_path_buf(), source }),
        None => Ok(()),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| WgnnError::Io { path: path.to_path_buf(), source })
}

/// The tensors and the metadata of a safetensors file's bytes.
fn parse<'b>(path: &Path, bytes: &'b [u8]) -> Result<(SafeTensors<'b>, HashMap<String, String>)> {
    let unreadable = |e: safetensors::SafeTensorError| {
        data_err(path, format!("not a readable safetensors file (truncated or corrupt?): {e}"))
    };
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(unreadable)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(unreadable)?;
    Ok((tensors, metadata.metadata().clone().unwrap_or_default()))
}

/// The `wgnn.checkpoint` metadata of a file.
fn checkpoint_meta(path: &Path, meta: &HashMap<String, String>) -> Result<SavedCheckpoint> {
    let text = meta.get(CHECKPOINT_KEY).ok_or_else(|| {
        data_err(path, format!("has no `{CHECKPOINT_KEY}` metadata: a saved model, not a checkpoint"))
    })?;
    from_json(CHECKPOINT_KEY, text).map_err(|e| data_err(path, e))
}

/// The epochs completed in the checkpoint at `path`.
fn checkpoint_epoch(path: &Path) -> Result<usize> {
    let bytes = read_file(path)?;
    let (_, meta) = parse(path, &bytes)?;
    Ok(checkpoint_meta(path, &meta)?.epoch)
}

/// A device lost during `fit` is the error to resume from: it names the newest readable
/// checkpoint in `checkpoint`'s folder (the last or best file, whichever holds more epochs; the
/// last on a tie). Other errors, and fits without checkpoints, are returned unchanged.
pub(crate) fn with_checkpoint_hint(err: WgnnError, checkpoint: Option<&Checkpointing>) -> WgnnError {
    match (err, checkpoint) {
        (WgnnError::DeviceLost { message, checkpoint: None }, Some(c)) => {
            let newest = [c.best_path(), c.last_path()]
                .into_iter()
                .filter_map(|path| checkpoint_epoch(&path).ok().map(|epoch| (path, epoch)))
                .max_by_key(|(_, epoch)| *epoch);
            WgnnError::DeviceLost { message, checkpoint: newest }
        }
        (err, _) => err,
    }
}

fn parse_architecture(path: &Path, meta: &HashMap<String, String>) -> Result<Architecture> {
    let text = meta.get(MODEL_KEY).ok_or_else(|| {
        data_err(path, format!("has no `{MODEL_KEY}` metadata: not a wgnn model (load_weights reads bare weights)"))
    })?;
    let format: SavedFormat = from_json(MODEL_KEY, text).map_err(|e| data_err(path, e))?;
    let invalid = |e: WgnnError| data_err(path, format!("describes an invalid model: {e}"));
    match format.format {
        1 => Architecture::from_v1(&from_json::<SavedModelV1>(MODEL_KEY, text).map_err(|e| data_err(path, e))?)
            .map_err(invalid),
        2..=FORMAT => {
            Architecture::from_saved(&from_json::<SavedModel>(MODEL_KEY, text).map_err(|e| data_err(path, e))?)
                .map_err(invalid)
        }
        other => {
            Err(data_err(path, format!("`{MODEL_KEY}` has format {other}; this wgnn reads formats 1 to {FORMAT}")))
        }
    }
}

fn tensor_f32(path: &Path, st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| data_err(path, format!("has no tensor `{name}`")))?;
    if t.dtype() != Dtype::F32 {
        return Err(data_err(path, format!("tensor `{name}` is {:?}; wgnn reads F32", t.dtype())));
    }
    if t.shape() != shape {
        return Err(data_err(path, format!("tensor `{name}` has shape {:?}; this model needs {shape:?}", t.shape())));
    }
    let values: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    // A NaN or infinity in weights or optimizer state would only surface as a failed run later,
    // blamed on the training.
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(data_err(path, format!("tensor `{name}` holds a non-finite value ({}) at index {i}", values[i])));
    }
    Ok(values)
}

/// What a tensor is where it holds squares (every value ≥ 0 in any state training can reach):
/// a batch norm's running variance, an optimizer's running second moments.
fn nonnegative(prefix: &str, slot: &str) -> Option<&'static str> {
    match (prefix, slot) {
        ("", "running_var") => Some("a batch norm's running variance"),
        ("", _) => None,
        ("optimizer.v.", _) => Some("Adam's second moment v"),
        ("optimizer.square_avg.", _) => Some("the running average of squared gradients"),
        ("optimizer.sum.", _) => Some("Adagrad's sum of squared gradients"),
        ("optimizer.acc_delta.", _) => Some("Adadelta's running average of squared updates"),
        _ => None,
    }
}

impl Sequential {
    /// What `wgnn.model` records of this model: its layers, seed and (if compiled) loss and
    /// optimizer.
    fn saved_model(&self) -> SavedModel {
        let layers: Vec<SavedLayer> = self.layers.iter().map(SavedLayer::from).collect();
        SavedModel {
            // Format 3 only where it is needed, so older wgnn still reads the other models.
            format: layers.iter().map(SavedLayer::format).max().unwrap_or(2),
            input_shape: self.input_shape.clone(),
            seed: self.seed,
            layers,
            compile: self.compiled.map(|(loss, optimizer)| SavedCompile::new(loss, optimizer)),
        }
    }

    /// The flat parameters and the optimizer state slots, read back from wherever they live, and
    /// the global step.
    fn state_to_host(&self) -> Result<(Vec<f32>, Vec<Vec<f32>>, u32)> {
        match &self.state {
            State::Gpu(g) => Ok((
                g.params.to_vec()?,
                g.opt_state.iter().map(|t| t.to_vec()).collect::<Result<_>>()?,
                g.global_step.to_vec_u32()?[0],
            )),
            State::Cpu(c) => Ok((c.params.clone(), c.opt_state.clone(), c.step)),
        }
    }

    /// Serialises the flat tensors named `{prefix}layers.{i}.{name}` (per prefix: the empty
    /// prefix is the parameters, every slot; an optimizer's holds the trained slots) and writes
    /// them with `meta`, atomically.
    fn write_safetensors(&self, path: &Path, flats: &[(String, &[f32])], meta: HashMap<String, String>) -> Result<()> {
        let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (prefix, flat) in flats {
            for s in self.layout.slots.iter().filter(|s| prefix.is_empty() || s.spec.trainable) {
                let bytes = bytemuck::cast_slice(&flat[s.offset..s.offset + s.spec.len()]).to_vec();
                named.push((format!("{prefix}layers.{}.{}", s.layer, s.spec.name), s.spec.shape.clone(), bytes));
            }
        }
        let views = named
            .iter()
            .map(|(n, shape, bytes)| TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (n.as_str(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| data_err(path, format!("could not lay out the tensors: {e}")))?;
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| data_err(path, format!("could not serialise the tensors: {e}")))?;
        create_parent_folder(path)?;
        write_atomic(path, &bytes)
    }

    /// Reads this model's tensors (`{prefix}` + their names in the file, as `arch` maps them;
    /// the trained ones only under an optimizer's prefix) into one flat vector.
    fn read_flat(&self, path: &Path, st: &SafeTensors, prefix: &str, arch: Option<&Architecture>) -> Result<Vec<f32>> {
        let mut flat = vec![0.0f32; self.layout.total];
        for s in self.layout.slots.iter().filter(|s| prefix.is_empty() || s.spec.trainable) {
            let name = arch
                .map_or_else(|| format!("layers.{}.{}", s.layer, s.spec.name), |a| a.tensor_name(s.layer, s.spec.name));
            let full_name = format!("{prefix}{name}");
            let v = tensor_f32(path, st, &full_name, &s.spec.shape)?;
            if let Some(what) = nonnegative(prefix, s.spec.name) {
                if let Some(i) = v.iter().position(|&x| x < 0.0) {
                    return Err(data_err(
                        path,
                        format!(
                            "tensor `{full_name}` holds a negative value ({}) at index {i}: {what} must be ≥ 0 \
                             (a negative one gives NaN through its square root)",
                            v[i]
                        ),
                    ));
                }
            }
            flat[s.offset..s.offset + v.len()].copy_from_slice(&v);
        }
        Ok(flat)
    }

    pub(super) fn write_params(&mut self, flat: Vec<f32>) -> Result<()> {
        match &mut self.state {
            State::Gpu(g) => g.params.write(&flat),
            State::Cpu(c) => {
                c.params = flat;
                Ok(())
            }
        }
    }

    /// Writes the weights and the architecture to `path` (a safetensors file; see the module
    /// docs for its layout), with the loss and optimizer of a compiled model, so that
    /// [`Sequential::load`] gives a model that predicts and evaluates as this one does. A missing
    /// folder is created (an error names the folder it could not create). Atomic: a temporary
    /// file beside `path`, then a rename.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let (params, _, _) = self.state_to_host()?;
        let meta = HashMap::from([(MODEL_KEY.to_string(), to_json(&self.saved_model())?)]);
        self.write_safetensors(path, &[(String::new(), &params)], meta)
    }

    /// Rebuilds a model saved with [`Sequential::save`] (or from a checkpoint) on `backend`, with
    /// its weights. A model that was compiled when saved comes back compiled with the same loss
    /// and optimizer (the optimizer's state starts afresh: [`Sequential::resume`] restores it
    /// from a checkpoint), so `predict` and `evaluate` give what they gave before saving. A file
    /// of an uncompiled model (or one written before wgnn saved the loss) loads uncompiled.
    pub fn load(path: impl AsRef<Path>, backend: &Backend) -> Result<Sequential> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let (st, meta) = parse(path, &bytes)?;
        let arch = parse_architecture(path, &meta)?;
        let invalid = |e: WgnnError| data_err(path, format!("describes an invalid model: {e}"));
        let mut builder = Sequential::new(arch.input_shape.clone(), arch.seed);
        for layer in &arch.layers {
            builder = builder.add(layer.clone());
        }
        let mut model = builder.build(backend).map_err(invalid)?;
        if let Some(compile) = &arch.compile {
            let (loss, optimizer) = compile.parts().map_err(invalid)?;
            model.compile(loss, optimizer).map_err(invalid)?;
        }
        let flat = model.read_flat(path, &st, "", Some(&arch))?;
        model.write_params(flat)?;
        Ok(model)
    }

    /// Replaces this model's weights with those in `path`: a file from [`Sequential::save`], a
    /// checkpoint, or any safetensors file with `layers.{i}.weight` [inputs, units] and
    /// `layers.{i}.bias` `[units]` tensors. A file of another architecture is an error naming both.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let (st, meta) = parse(path, &bytes)?;
        let arch = match meta.contains_key(MODEL_KEY) {
            true => Some(parse_architecture(path, &meta)?),
            false => None,
        };
        if let Some(theirs) = &arch {
            // The same layers with the same parameter shapes (dropout rates, activations and
            // batch-norm settings may differ: they are not weights).
            let kinds = |layers: &[crate::layers::Layer]| {
                layers.iter().map(|l| (std::mem::discriminant(l), l.slots(&[]).len())).collect::<Vec<_>>()
            };
            let same = theirs.input_shape.iter().product::<usize>() == self.input_dim()
                && kinds(&theirs.layers) == kinds(&self.layers)
                && theirs.layers.iter().zip(&self.layers).all(|(a, b)| match (a, b) {
                    (crate::layers::Layer::Dense(a), crate::layers::Layer::Dense(b)) => {
                        (a.units, a.use_bias) == (b.units, b.use_bias)
                    }
                    _ => true,
                });
            if !same {
                return Err(data_err(
                    path,
                    format!(
                        "holds weights for {} but this model is {}",
                        describe(&theirs.input_shape, &theirs.layers),
                        describe(&self.input_shape, &self.layers)
                    ),
                ));
            }
        } else {
            let layers_in_file =
                st.names().iter().filter(|n| n.starts_with("layers.") && n.ends_with(".weight")).count();
            let ours = self.weights()?.len();
            if layers_in_file != ours {
                return Err(data_err(
                    path,
                    format!("holds {layers_in_file} layers of weights but this model has {ours}"),
                ));
            }
        }
        let flat = self.read_flat(path, &st, "", arch.as_ref())?;
        self.write_params(flat)
    }

    /// Writes a checkpoint: the weights, the optimizer's state and step, `epoch` (the epochs
    /// completed), `history` and the architecture (seed included). Atomic, like `save`.
    /// [`Sequential::resume`] reads it back.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>, epoch: usize, history: &History) -> Result<()> {
        let path = path.as_ref();
        let (loss, optimizer) =
            self.compiled.ok_or_else(|| WgnnError::invalid("save_checkpoint", "the model is not compiled"))?;
        let (params, slots, step) = self.state_to_host()?;
        let mut flats: Vec<(String, &[f32])> = vec![(String::new(), &params)];
        for (name, flat) in optimizer_slots(&optimizer).iter().zip(&slots) {
            flats.push((format!("optimizer.{name}."), flat));
        }
        let checkpoint = SavedCheckpoint {
            epoch,
            step,
            loss: loss.name().to_string(),
            optimizer: optimizer.into(),
            fit: self.fit_record.map(Into::into),
        };
        let meta = HashMap::from([
            (MODEL_KEY.to_string(), to_json(&self.saved_model())?),
            (CHECKPOINT_KEY.to_string(), to_json(&checkpoint)?),
            (HISTORY_KEY.to_string(), history.to_csv()),
        ]);
        self.write_safetensors(path, &flats, meta)
    }

    /// Rebuilds a model from a checkpoint of [`Sequential::save_checkpoint`] (or one `fit` wrote),
    /// compiled with the same loss and optimizer, the optimizer's state and step restored. The
    /// next `fit` continues after the checkpoint's epoch up to `FitOptions::epochs` and returns the
    /// whole history, the checkpoint's epochs first. With the same data and options, the result
    /// is the run that was never interrupted. Weights and optimizer state must be finite: a NaN
    /// or infinity is an error naming the tensor.
    pub fn resume(path: impl AsRef<Path>, backend: &Backend) -> Result<Sequential> {
        let path = path.as_ref();
        let mut model = Sequential::load(path, backend)?;
        let bytes = read_file(path)?;
        let (st, meta) = parse(path, &bytes)?;
        let checkpoint = checkpoint_meta(path, &meta)?;
        let loss = Loss::parse(&checkpoint.loss).map_err(|e| data_err(path, e.to_string()))?;
        let optimizer: Optimizer = checkpoint.optimizer.into();
        let history = History::from_csv(meta.get(HISTORY_KEY).map_or("", String::as_str))
            .map_err(|e| data_err(path, format!("bad `{HISTORY_KEY}` metadata: {e}")))?;
        model.compile(loss, optimizer).map_err(|e| match e {
            WgnnError::InvalidArgument { detail, .. } => {
                data_err(path, format!("holds an unusable optimizer: {detail}"))
            }
            e => e,
        })?;
        let arch = parse_architecture(path, &meta)?;
        let slots = optimizer_slots(&optimizer)
            .iter()
            .map(|name| model.read_flat(path, &st, &format!("optimizer.{name}."), Some(&arch)))
            .collect::<Result<Vec<_>>>()?;
        let step = checkpoint.step;
        match &mut model.state {
            State::Gpu(g) => {
                for (t, flat) in g.opt_state.iter().zip(&slots) {
                    t.write(flat)?;
                }
                g.global_step.write_u32(&[step, 0])?;
            }
            State::Cpu(c) => {
                let CpuState { opt_state, step: cpu_step, .. } = c;
                *opt_state = slots;
                *cpu_step = step;
            }
        }
        let fit = checkpoint.fit.map(Into::into);
        model.resume_point = Some(ResumePoint { epoch: checkpoint.epoch, history, fit });
        model.fit_record = fit;
        Ok(model)
    }

    /// The epochs a model made by [`Sequential::resume`] has already trained, until its next `fit`.
    pub fn resumed_epoch(&self) -> Option<usize> {
        self.resume_point.as_ref().map(|r| r.epoch)
    }

    /// The data settings (batch size, rows, validation fraction) of the run that wrote the
    /// checkpoint a model made by [`Sequential::resume`] came from, until its next `fit`; `None`
    /// where the checkpoint does not record them (written before wgnn did, or outside `fit`).
    /// The same settings continue the run that was never stopped.
    pub fn resumed_fit(&self) -> Option<FitRecord> {
        self.resume_point.as_ref().and_then(|r| r.fit)
    }

    /// The history of the epochs a model made by [`Sequential::resume`] has already trained,
    /// until its next `fit` (which returns it continued).
    pub fn resumed_history(&self) -> Option<&History> {
        self.resume_point.as_ref().map(|r| &r.history)
    }
}
