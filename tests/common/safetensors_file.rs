//! A safetensors file read whole into memory and written back: its tensors and metadata, to damage
//! one on purpose (a huge layer in the metadata, a negative variance) the way a user's file could be.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Every tensor (name, shape, little-endian f32 values) and the metadata.
pub struct SafetensorsFile {
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    pub metadata: HashMap<String, String>,
}

impl SafetensorsFile {
    pub fn read(path: &Path) -> SafetensorsFile {
        let bytes = std::fs::read(path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let metadata = meta.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                let values = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                (name, t.shape().to_vec(), values)
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        SafetensorsFile { tensors, metadata }
    }

    /// The values of tensor `name`, to change.
    pub fn values(&mut self, name: &str) -> &mut Vec<f32> {
        let found = self.tensors.iter_mut().find(|(n, _, _)| n == name);
        &mut found.unwrap_or_else(|| panic!("no tensor {name}")).2
    }

    pub fn bytes(&self) -> Vec<u8> {
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, s, v)| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views: Vec<(&str, TensorView)> =
            raw.iter().map(|(n, s, b)| (n.as_str(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
        safetensors::serialize(views, Some(self.metadata.clone())).unwrap()
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}
