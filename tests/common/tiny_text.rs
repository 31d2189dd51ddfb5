//! The tiny GPT tests' text: 11 distinct characters.

use wgnn::internals::rng::Rng;
use wgnn::TokenDataset;

/// `len` characters of 11 distinct ones: a cycle through "abcdefghij\n" with a quarter of them
/// drawn at random, so that there is something to learn and the loss moves.
pub fn tiny_text(len: usize, seed: u64) -> TokenDataset {
    const CHARS: &[u8] = b"abcdefghij\n";
    let mut rng = Rng::new(seed);
    let bytes: Vec<u8> = (0..len)
        .map(|i| if rng.below(4) == 0 { CHARS[rng.below(CHARS.len())] } else { CHARS[i % CHARS.len()] })
        .collect();
    TokenDataset::from_text(&bytes, "tiny text").unwrap()
}
