//! An exact port of the parts of CPython's `random` module that the Wanda and SparseGPT
//! calibration loaders use: `random.seed(int)`, `getrandbits`, `randint`/`randrange` (through
//! `_randbelow`), and `random()`.
//!
//! Those loaders pick calibration windows with `random.seed(seed)` followed by
//! `random.randint(...)` calls, so drawing "the same 128 windows as the paper" means reproducing
//! CPython's generator draw for draw, not merely using some Mersenne Twister. This module owns that
//! exactness and nothing else; calibration sampling builds on it.
//!
//! What is reproduced, and from where (CPython 3.11):
//! - `Modules/_randommodule.c`: MT19937 (`genrand_uint32`, `init_genrand`, `init_by_array`),
//!   `random_seed` for an int (the absolute value split into 32-bit words, least significant first;
//!   `0` gives the key `[0]`), `getrandbits` (`k <= 32`: one word shifted right by `32 - k`;
//!   larger `k`: words from least to most significant, the last one shifted right to keep only the
//!   remaining bits), and `random()` (`(a * 2**26 + b) / 2**53` with `a = w >> 5`, `b = w >> 6`).
//! - `Lib/random.py`: `seed` (version 2 passes an int straight to the C seed),
//!   `_randbelow_with_getrandbits` (`k = n.bit_length()`, draw `getrandbits(k)` until it is below
//!   `n`), `randrange(start, stop)` with unit step (`start + _randbelow(stop - start)`, an error if
//!   the width is not positive), and `randint(a, b) == randrange(a, b + 1)`.
//!
//! `golden.json` under `tests/golden/pyrandom/` (written by the CPython script beside it) pins
//! every function here to CPython's own output.

/// MT19937 state size in 32-bit words (`N` in `_randommodule.c`).
const N: usize = 624;
/// MT19937 shift size (`M` in `_randommodule.c`).
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// A call that CPython would reject (or, for `_randbelow(0)`, never return from).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PyRandomError {
    /// `randint(a, b)` with `a > b`; CPython raises `ValueError: empty range for randrange()`.
    #[error("randint({a}, {b}): empty range, a must not exceed b (Python raises ValueError: empty range for randrange())")]
    EmptyRange { a: i64, b: i64 },
    /// `randbelow(0)`: CPython 3.11's `_randbelow` is defined only for `n > 0` (with `n == 0` it
    /// would loop forever, since `getrandbits(0)` is always `0`).
    #[error("randbelow(0): the bound must be at least 1 (CPython's _randbelow is defined only for n > 0)")]
    ZeroBound,
    /// `getrandbits(k)` with more bits than the `u64` result holds.
    #[error("getrandbits({k}): at most 64 bits fit the result")]
    TooManyBits { k: u32 },
}

/// CPython's `random.Random` (MT19937), seeded like `random.seed(int)`.
///
/// Every draw consumes the generator exactly as CPython does, so interleaved calls (`randint`, then
/// `random()`, then `getrandbits`) stay in step with a Python program making the same calls.
#[derive(Clone)]
pub struct PyRandom {
    mt: [u32; N],
    /// Next word of `mt` to temper; `N` means "regenerate first" (`self->index` in CPython).
    index: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom").field("index", &self.index).finish_non_exhaustive()
    }
}

impl PyRandom {
    /// `random.seed(seed)` for a Python int: CPython seeds with `abs(seed)`, so `-5` and `5` give
    /// the same stream.
    pub fn new(seed: i64) -> PyRandom {
        PyRandom::from_u64(seed.unsigned_abs())
    }

    /// `random.seed(seed)` for a non-negative Python int below `2**64`.
    pub fn from_u64(seed: u64) -> PyRandom {
        // `random_seed`: the 32-bit words of the number, least significant first, as many as its
        // bit length needs, and at least one (`0` gives `[0]`).
        let low = seed as u32;
        let high = (seed >> 32) as u32;
        if high == 0 { PyRandom::from_key(&[low]) } else { PyRandom::from_key(&[low, high]) }
    }

    /// `init_by_array(key)`; `key` is never empty here.
    fn from_key(key: &[u32]) -> PyRandom {
        let mut mt = init_genrand(19_650_218);
        let mut i = 1usize;
        let mut j = 0usize;
        for _ in 0..N.max(key.len()) {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_664_525)).wrapping_add(key[j]).wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000; // MSB is 1, assuring a non-zero initial array.
        // `init_genrand` leaves `index == N`, and `init_by_array` does not change it.
        PyRandom { mt, index: N }
    }

    /// `genrand_uint32`: the next tempered 32-bit word.
    fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.regenerate();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// Generate the next `N` words at once (the first half of `genrand_uint32`).
    fn regenerate(&mut self) {
        let mt = &mut self.mt;
        let mag01 = |y: u32| if y & 1 == 0 { 0 } else { MATRIX_A };
        for kk in 0..N - M {
            let y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
            mt[kk] = mt[kk + M] ^ (y >> 1) ^ mag01(y);
        }
        for kk in N - M..N - 1 {
            let y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
            mt[kk] = mt[kk + M - N] ^ (y >> 1) ^ mag01(y);
        }
        let y = (mt[N - 1] & UPPER_MASK) | (mt[0] & LOWER_MASK);
        mt[N - 1] = mt[M - 1] ^ (y >> 1) ^ mag01(y);
        self.index = 0;
    }

    /// `getrandbits(k)` for `k <= 128` (the callers guarantee the bound).
    fn bits(&mut self, k: u32) -> u128 {
        if k == 0 {
            return 0;
        }
        if k <= 32 {
            return u128::from(self.next_u32() >> (32 - k));
        }
        // Words from least to most significant; the last keeps only its remaining high bits.
        let words = (k - 1) / 32 + 1;
        let mut left = k;
        let mut out = 0u128;
        for i in 0..words {
            let mut r = self.next_u32();
            if left < 32 {
                r >>= 32 - left;
            }
            out |= u128::from(r) << (32 * i);
            left = left.saturating_sub(32);
        }
        out
    }

    /// `random.getrandbits(k)`: an integer with `k` random bits, `k` in `0..=64`.
    pub fn getrandbits(&mut self, k: u32) -> Result<u64, PyRandomError> {
        if k > 64 {
            return Err(PyRandomError::TooManyBits { k });
        }
        // At most 64 bits were drawn, so the value fits.
        Ok(self.bits(k) as u64)
    }

    /// `_randbelow_with_getrandbits(n)` for `1 <= n <= 2**64` (the callers guarantee the bound).
    fn below(&mut self, n: u128) -> u128 {
        let k = 128 - n.leading_zeros(); // n.bit_length(), at most 65
        let mut r = self.bits(k);
        while r >= n {
            r = self.bits(k);
        }
        r
    }

    /// `random._randbelow(n)`: uniform in `0..n` by rejection sampling on `getrandbits`
    /// (`k = n.bit_length()`; draw `getrandbits(k)` until it is below `n`). `n` must be at least 1.
    pub fn randbelow(&mut self, n: u64) -> Result<u64, PyRandomError> {
        if n == 0 {
            return Err(PyRandomError::ZeroBound);
        }
        // The result is below n, so it fits.
        Ok(self.below(u128::from(n)) as u64)
    }

    /// `random.randint(a, b)`: uniform in `a..=b`, drawn as CPython draws
    /// `randrange(a, b + 1) == a + _randbelow(b + 1 - a)`. The whole `i64` range is allowed
    /// (a width of `2**64`, which CPython draws with `getrandbits(65)`).
    pub fn randint(&mut self, a: i64, b: i64) -> Result<i64, PyRandomError> {
        if a > b {
            return Err(PyRandomError::EmptyRange { a, b });
        }
        let width = (i128::from(b) - i128::from(a) + 1) as u128; // 1 ..= 2**64
        let offset = self.below(width); // < 2**64
        // a + offset lies in a..=b, so the sum modulo 2**64 is the exact result.
        Ok(a.wrapping_add(offset as u64 as i64))
    }

    /// `random.random()`: a float in `[0, 1)` with 53 random bits, `(a * 2**26 + b) / 2**53` where
    /// `a` is the first draw's top 27 bits and `b` the second draw's top 26 bits.
    pub fn random(&mut self) -> f64 {
        let a = self.next_u32() >> 5;
        let b = self.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) * (1.0 / 9_007_199_254_740_992.0)
    }
}

/// `init_genrand(s)`: the linear-congruential fill of the state from one word.
fn init_genrand(s: u32) -> [u32; N] {
    let mut mt = [0u32; N];
    mt[0] = s;
    for i in 1..N {
        mt[i] = 1_812_433_253u32.wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_add(i as u32);
    }
    mt
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn golden() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/golden/pyrandom/golden.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn list<'a>(case: &'a Value, key: &str) -> &'a Vec<Value> {
        case[key].as_array().unwrap_or_else(|| panic!("golden.json: no list {key}"))
    }

    fn u64s(case: &Value, key: &str) -> Vec<u64> {
        list(case, key).iter().map(|v| v.as_u64().unwrap()).collect()
    }

    fn i64s(case: &Value, key: &str) -> Vec<i64> {
        list(case, key).iter().map(|v| v.as_i64().unwrap()).collect()
    }

    fn draw<T>(seed: i64, n: usize, mut f: impl FnMut(&mut PyRandom) -> T) -> Vec<T> {
        let mut r = PyRandom::new(seed);
        (0..n).map(|_| f(&mut r)).collect()
    }

    #[test]
    fn matches_cpython_for_every_golden_seed() {
        let golden = golden();
        let cases = golden["cases"].as_array().unwrap();
        let seeds: Vec<i64> = cases.iter().map(|c| c["seed"].as_i64().unwrap()).collect();
        assert_eq!(seeds, [0, 1, 42, (1 << 32) + 7, 1 << 40, -5]);
        for case in cases {
            let seed = case["seed"].as_i64().unwrap();
            let ctx = format!("seed {seed} (golden from Python {})", golden["python"]);
            for (key, k) in [("getrandbits_32", 32), ("getrandbits_7", 7), ("getrandbits_64", 64), ("getrandbits_33", 33)] {
                let want = u64s(case, key);
                assert_eq!(draw(seed, want.len(), |r| r.getrandbits(k).unwrap()), want, "{key}, {ctx}");
            }
            for (key, a, b) in [
                ("randint_0_999", 0, 999),
                ("randint_0_2p31m1", 0, (1i64 << 31) - 1),
                ("randint_pm2p40", -(1i64 << 40), 1i64 << 40),
                ("randint_i64_full", i64::MIN, i64::MAX),
            ] {
                let want = i64s(case, key);
                assert_eq!(draw(seed, want.len(), |r| r.randint(a, b).unwrap()), want, "{key}, {ctx}");
            }
            let want = i64s(case, "randint_3_3_then_getrandbits_32");
            let mut r = PyRandom::new(seed);
            let mut got: Vec<i64> = (0..5).map(|_| r.randint(3, 3).unwrap()).collect();
            got.push(r.getrandbits(32).unwrap() as i64);
            assert_eq!(got, want, "randint(3, 3) x5 then getrandbits(32), {ctx}");

            let want = u64s(case, "random_bits");
            let got = draw(seed, want.len(), |r| r.random());
            assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "random(), {ctx}");
            for (x, text) in got.iter().zip(list(case, "random_repr")) {
                let text = text.as_str().unwrap();
                assert_eq!(text.parse::<f64>().unwrap(), *x, "random() repr {text}, {ctx}");
            }
        }
    }

    #[test]
    fn matches_the_wanda_calibration_loop() {
        let golden = golden();
        let want: Vec<(i64, i64)> =
            list(&golden, "wanda_seed0_i_j").iter().map(|p| (p[0].as_i64().unwrap(), p[1].as_i64().unwrap())).collect();
        assert_eq!(want.len(), 50);
        let mut r = PyRandom::new(0);
        let got: Vec<(i64, i64)> = (0..50).map(|_| (r.randint(0, 999).unwrap(), r.randint(0, 5000 - 2048 - 1).unwrap())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn seeding_follows_cpython() {
        // abs(): negative seeds give the stream of their magnitude, i64::MIN included (2**63).
        assert_eq!(draw(-5, 8, |r| r.getrandbits(32).unwrap()), draw(5, 8, |r| r.getrandbits(32).unwrap()));
        let mut a = PyRandom::new(i64::MIN);
        let mut b = PyRandom::from_u64(1 << 63);
        for _ in 0..8 {
            assert_eq!(a.getrandbits(64).unwrap(), b.getrandbits(64).unwrap());
        }
        // 2**32 has the key [0, 1], not [0]: a different stream from seed 0.
        assert_ne!(draw(1 << 32, 4, |r| r.getrandbits(32).unwrap()), draw(0, 4, |r| r.getrandbits(32).unwrap()));
        // getrandbits(0) draws nothing.
        let mut r = PyRandom::new(0);
        assert_eq!(r.getrandbits(0).unwrap(), 0);
        assert_eq!(r.getrandbits(32).unwrap(), 3_626_764_237);
    }

    #[test]
    fn rejects_what_cpython_rejects() {
        let mut r = PyRandom::new(0);
        let err = r.randint(5, 4).unwrap_err();
        assert_eq!(err, PyRandomError::EmptyRange { a: 5, b: 4 });
        assert!(err.to_string().contains("randint(5, 4)"), "{err}");
        assert!(err.to_string().contains("empty range"), "{err}");
        assert_eq!(r.randbelow(0), Err(PyRandomError::ZeroBound));
        assert_eq!(r.getrandbits(65), Err(PyRandomError::TooManyBits { k: 65 }));
        // A rejected call draws nothing: the stream continues as if it had not been made.
        assert_eq!(r.getrandbits(32).unwrap(), 3_626_764_237);
    }

    #[test]
    fn randbelow_is_randint_from_zero() {
        let mut a = PyRandom::new(42);
        let mut b = PyRandom::new(42);
        for n in [1u64, 2, 3, 1000, 2952, (1 << 31) + 1, 1 << 63] {
            let via_randint = b.randint(0, (n - 1) as i64).unwrap();
            assert_eq!(a.randbelow(n).unwrap(), via_randint as u64, "n = {n}");
        }
    }
}
