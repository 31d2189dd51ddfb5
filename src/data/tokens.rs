//! A 1-D token data set for language models (nanoGPT's `train.bin` / `val.bin`): token ids (u32)
//! from memory, or a text file's characters through a vocabulary of the bytes it holds, sorted
//! (nanoGPT's `shakespeare_char/prepare.py`); split by fraction, first part for training. Batches
//! are random windows of `block + 1` tokens drawn from a seed and a step: on the GPU by
//! [`crate::kernels::token_batch`], on the host by [`TokenDataset::windows`] (the same windows).

use std::path::Path;

use super::MAX_CLASSES;
use crate::cpu::token_batch::token_windows;
use crate::error::{Result, WgnnError};

/// Token ids, each below `vocab_size`, and, for text, the byte each id stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenDataset {
    tokens: Vec<u32>,
    vocab_size: usize,
    /// Id → byte, sorted, where the tokens are a text's bytes.
    chars: Option<Vec<u8>>,
    /// Where the tokens came from, for errors.
    source: String,
}

impl TokenDataset {
    /// `tokens`, each below `vocab_size` (1 to 2^24, as a class count); an error names the first
    /// token out of range, its position and `source`.
    pub fn from_tokens(tokens: Vec<u32>, vocab_size: usize, source: &str) -> Result<TokenDataset> {
        const OP: &str = "TokenDataset::from_tokens";
        if vocab_size == 0 || vocab_size > MAX_CLASSES {
            return Err(WgnnError::invalid(
                OP,
                format!("{source}: vocab_size {vocab_size} must be in 1..={MAX_CLASSES}"),
            ));
        }
        if tokens.is_empty() {
            return Err(WgnnError::invalid(OP, format!("{source}: no tokens")));
        }
        if tokens.len() > u32::MAX as usize {
            return Err(WgnnError::invalid(OP, format!("{source}: {} tokens are more than 2^32 − 1", tokens.len())));
        }
        if let Some(i) = tokens.iter().position(|&t| t as usize >= vocab_size) {
            return Err(WgnnError::invalid(
                OP,
                format!("{source}: token {} at position {i} is out of the vocabulary of {vocab_size} ids", tokens[i]),
            ));
        }
        Ok(TokenDataset { tokens, vocab_size, chars: None, source: source.into() })
    }

    /// A text's bytes as tokens: the vocabulary is the distinct bytes, sorted (id 0 the smallest),
    /// as nanoGPT's prepare.py sorts the characters (the same for ASCII text; other UTF-8 text is
    /// tokenised byte by byte).
    pub fn from_text(text: &[u8], source: &str) -> Result<TokenDataset> {
        let mut present = [false; 256];
        for &b in text {
            present[b as usize] = true;
        }
        let chars: Vec<u8> = (0..=255u8).filter(|&b| present[b as usize]).collect();
        let mut id = [0u32; 256];
        for (i, &c) in chars.iter().enumerate() {
            id[c as usize] = i as u32;
        }
        let tokens = text.iter().map(|&b| id[b as usize]).collect();
        let vocab_size = chars.len().max(1);
        Ok(TokenDataset { chars: Some(chars), ..TokenDataset::from_tokens(tokens, vocab_size, source)? })
    }

    /// [`TokenDataset::from_text`] of a file's bytes; errors name the file.
    pub fn from_text_file(path: impl AsRef<Path>) -> Result<TokenDataset> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| WgnnError::Io { path: path.into(), source })?;
        if bytes.is_empty() {
            return Err(WgnnError::Data { path: path.into(), detail: "the file is empty: no tokens".into() });
        }
        TokenDataset::from_text(&bytes, &path.display().to_string())
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    /// Never true: a data set has at least one token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    /// The byte of each id (sorted), for a text's tokens; None for ids given as such.
    pub fn vocabulary(&self) -> Option<&[u8]> {
        self.chars.as_deref()
    }

    /// `text`'s ids in this vocabulary; an error names a byte it does not have.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let chars = self.text_vocabulary("encode")?;
        text.bytes()
            .map(|b| {
                chars.binary_search(&b).map(|i| i as u32).map_err(|_| {
                    WgnnError::invalid("encode", format!("{:?} is not in the vocabulary of {}", b as char, self.source))
                })
            })
            .collect()
    }

    /// The text of `ids` (bytes that are not UTF-8 on their own are replaced); an error names an
    /// id past the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let chars = self.text_vocabulary("decode")?;
        let bytes = ids
            .iter()
            .map(|&i| {
                chars.get(i as usize).copied().ok_or_else(|| {
                    WgnnError::invalid("decode", format!("id {i} is past the vocabulary of {} ids", chars.len()))
                })
            })
            .collect::<Result<Vec<u8>>>()?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn text_vocabulary(&self, op: &str) -> Result<&[u8]> {
        self.chars
            .as_deref()
            .ok_or_else(|| WgnnError::invalid(op, format!("{} has token ids, not text: no vocabulary", self.source)))
    }

    /// (the first ⌊len·fraction⌋ tokens, the rest), both with this vocabulary: nanoGPT's
    /// `n = len(data); train = data[:int(n*0.9)]`. An error unless both parts have a token.
    pub fn split(&self, fraction: f64) -> Result<(TokenDataset, TokenDataset)> {
        const OP: &str = "TokenDataset::split";
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(WgnnError::invalid(OP, format!("fraction {fraction} must be in (0, 1)")));
        }
        let at = (self.len() as f64 * fraction) as usize;
        if at == 0 || at == self.len() {
            return Err(WgnnError::invalid(
                OP,
                format!("a fraction {fraction} of {} tokens leaves one part empty", self.len()),
            ));
        }
        let part = |tokens: &[u32], which: &str| TokenDataset {
            tokens: tokens.to_vec(),
            vocab_size: self.vocab_size,
            chars: self.chars.clone(),
            source: format!("{} ({which})", self.source),
        };
        Ok((part(&self.tokens[..at], "first part"), part(&self.tokens[at..], "second part")))
    }

    /// An error naming `op` unless `batch` windows of `block + 1` tokens can be drawn: batch and
    /// block at least 1, block + 1 at most the tokens, batch·block within a u32.
    pub fn check_windows(&self, op: &str, batch: usize, block: usize) -> Result<()> {
        check_windows(op, self.len(), batch, block)
    }

    /// The batch the GPU draws at (`seed`, `step`): (x, y), each `[batch, block]`, the windows'
    /// first `block` tokens and their next-token targets.
    pub fn windows(&self, step: u32, seed: u64, batch: usize, block: usize) -> Result<(Vec<u32>, Vec<u32>)> {
        self.windows_from(step, seed, 0, batch, block)
    }

    /// Rows `first..first + batch` of the batch drawn at (`seed`, `step`): what data-parallel
    /// rank r draws with `first` = r·batch, so that R ranks together train on the windows
    /// [`TokenDataset::windows`] gives one process at R·batch.
    pub fn windows_from(
        &self,
        step: u32,
        seed: u64,
        first: usize,
        batch: usize,
        block: usize,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        const OP: &str = "TokenDataset::windows";
        check_windows(OP, self.len(), batch, block)?;
        check_first_row(OP, first, batch)?;
        Ok(token_windows(&self.tokens, step, seed, first, batch, block))
    }
}

/// Rows `first..first + batch` of a batch are numbered within a u32, as the window hash takes them.
pub(crate) fn check_first_row(op: &str, first: usize, batch: usize) -> Result<()> {
    if first.checked_add(batch).is_none_or(|end| end > u32::MAX as usize + 1) {
        return Err(WgnnError::invalid(
            op,
            format!("rows {first}..{first} + {batch} of a batch: past the 2^32 rows the window hash numbers"),
        ));
    }
    Ok(())
}

/// The window checks, for `len` tokens (shared with the GPU's wrapper).
pub(crate) fn check_windows(op: &str, len: usize, batch: usize, block: usize) -> Result<()> {
    if batch == 0 || block == 0 {
        return Err(WgnnError::invalid(op, format!("batch {batch} and block {block} must be at least 1")));
    }
    if block >= len {
        return Err(WgnnError::invalid(
            op,
            format!("a window of block + 1 = {} tokens is longer than the {len} tokens", block as u64 + 1),
        ));
    }
    if batch.checked_mul(block).is_none_or(|n| n > u32::MAX as usize) {
        return Err(WgnnError::invalid(op, format!("batch {batch} × block {block} tokens are more than 2^32 − 1")));
    }
    Ok(())
}
