//! NumPy's legacy `RandomState` (the MT19937 generator behind `np.random.RandomState(seed)` and
//! scikit-learn's `random_state=`), bit for bit, as far as `permutation` needs it: tutorials
//! split their data with it, and reproducing their figures needs the same rows.
//!
//! Only what `permutation` uses is here: an integer seed (NumPy's `_legacy_seeding` with an int
//! calls `mt19937_seed`, Matsumoto and Nishimura's `init_genrand`, not `init_by_array`), the
//! tempered 32-bit output, the 64-bit output (two 32-bit ones, high word first), the legacy
//! bounded draw `random_interval` and the Fisher–Yates shuffle from the end. The fixture test
//! (tests/sklearn_split.rs) checks each against NumPy itself.

const STATE_LEN: usize = 624;
const SHIFT: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// `np.random.RandomState(seed)` for an integer seed.
#[derive(Clone)]
pub struct NumpyRandomState {
    key: [u32; STATE_LEN],
    /// Next word of `key` to temper; `STATE_LEN` means the block is used up.
    pos: usize,
}

impl std::fmt::Debug for NumpyRandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The 624-word state is noise in a debug print; the position says where the stream is.
        f.debug_struct("NumpyRandomState").field("pos", &self.pos).finish_non_exhaustive()
    }
}

impl NumpyRandomState {
    /// NumPy accepts integer seeds in [0, 2^32 − 1], which is exactly `u32`.
    pub fn new(seed: u32) -> NumpyRandomState {
        let mut key = [0u32; STATE_LEN];
        key[0] = seed;
        for i in 1..STATE_LEN {
            let prev = key[i - 1];
            key[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        NumpyRandomState { key, pos: STATE_LEN }
    }

    /// The next tempered 32-bit output (NumPy's `next_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == STATE_LEN {
            self.regenerate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// NumPy's `next_uint64` for MT19937: the first 32-bit output is the high word.
    pub fn next_u64(&mut self) -> u64 {
        let high = self.next_u32() as u64;
        (high << 32) | self.next_u32() as u64
    }

    /// Uniform integer in [0, max], NumPy's legacy `random_interval`: draws masked to the
    /// smallest all-ones mask covering `max` and rejects those above it (32-bit draws while
    /// `max` fits in 32 bits). `max == 0` draws nothing.
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        loop {
            let value = if max <= u32::MAX as u64 { self.next_u32() as u64 & mask } else { self.next_u64() & mask };
            if value <= max {
                return value;
            }
        }
    }

    /// `RandomState.permutation(n)`: `arange(n)` shuffled by Fisher–Yates from the last
    /// element down, swapping element `i` with `random_interval(i)`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            // j <= i < n, so it fits in usize.
            let j = self.random_interval(i as u64) as usize;
            order.swap(i, j);
        }
        order
    }

    /// The next block of 624 words (the MT19937 "twist").
    fn regenerate(&mut self) {
        for i in 0..STATE_LEN {
            let y = (self.key[i] & UPPER_MASK) | (self.key[(i + 1) % STATE_LEN] & LOWER_MASK);
            let odd = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.key[i] = self.key[(i + SHIFT) % STATE_LEN] ^ (y >> 1) ^ odd;
        }
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference outputs of `init_genrand(5489)` (the default seed of Matsumoto and
    /// Nishimura's mt19937ar.c, also what C++'s `std::mt19937` yields): the first output and the
    /// 10,000th.
    #[test]
    fn matches_the_reference_mt19937_stream() {
        let mut rng = NumpyRandomState::new(5489);
        assert_eq!(rng.next_u32(), 3_499_211_612);
        for _ in 1..9_999 {
            rng.next_u32();
        }
        assert_eq!(rng.next_u32(), 4_123_659_995);
    }

    #[test]
    fn random_interval_of_zero_draws_nothing() {
        let mut a = NumpyRandomState::new(42);
        let mut b = NumpyRandomState::new(42);
        assert_eq!(a.random_interval(0), 0);
        assert_eq!(a.next_u32(), b.next_u32());
    }

    #[test]
    fn permutation_of_zero_and_one_rows() {
        assert!(NumpyRandomState::new(1).permutation(0).is_empty());
        assert_eq!(NumpyRandomState::new(1).permutation(1), vec![0]);
    }
}
