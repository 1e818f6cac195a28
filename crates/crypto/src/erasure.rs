//! Systematic erasure coding behind a small trait.
//!
//! The store splits each sealed segment into `k` data shards and adds `n − k` parity
//! shards; any `k` rebuild the segment. [`ReedSolomon`] wraps `reed-solomon-erasure`
//! (GF(2^8)); the trait keeps the choice swappable (e.g. for `reed-solomon-simd` at large
//! shard counts).

use crate::CryptoError;

/// An `(n, k)` systematic erasure code over equal-length shards.
pub trait ErasureCode: Send + Sync {
    /// Number of data shards `k`.
    fn data_shards(&self) -> usize;
    /// Total number of shards `n`.
    fn total_shards(&self) -> usize;
    /// Fills the parity shards `shards[k..n]` from the data shards `shards[..k]`.
    /// All shards must have the same length.
    fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CryptoError>;
    /// Rebuilds every missing shard in place, given at least `k` present ones.
    fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), CryptoError>;
    /// Rebuilds only the missing data shards.
    fn reconstruct_data(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), CryptoError>;
}

/// Reed–Solomon over GF(2^8) from `reed-solomon-erasure`.
pub struct ReedSolomon {
    inner: reed_solomon_erasure::galois_8::ReedSolomon,
}

impl ReedSolomon {
    /// An `(n, k)` code. Requires `1 <= k < n <= 256` (at least one parity shard).
    pub fn new(k: usize, n: usize) -> Result<Self, CryptoError> {
        if k == 0 || k > n || n > 256 {
            return Err(CryptoError::Erasure {
                reason: "need 1 <= k <= n <= 256",
            });
        }
        // reed-solomon-erasure rejects zero parity shards, so k == n is refused here; the
        // store's one-cloud mode (n = k = 1) does not erasure-code at all.
        if k == n {
            return Err(CryptoError::Erasure {
                reason: "need at least one parity shard",
            });
        }
        let inner = reed_solomon_erasure::galois_8::ReedSolomon::new(k, n - k).map_err(|_| {
            CryptoError::Erasure {
                reason: "invalid code parameters",
            }
        })?;
        Ok(Self { inner })
    }
}

impl ErasureCode for ReedSolomon {
    fn data_shards(&self) -> usize {
        self.inner.data_shard_count()
    }

    fn total_shards(&self) -> usize {
        self.inner.total_shard_count()
    }

    fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CryptoError> {
        self.inner
            .encode_sep(data, parity)
            .map_err(|_| CryptoError::Erasure {
                reason: "shard count or length mismatch",
            })
    }

    fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), CryptoError> {
        self.inner
            .reconstruct(shards)
            .map_err(|_| CryptoError::Erasure {
                reason: "too few shards or length mismatch",
            })
    }

    fn reconstruct_data(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), CryptoError> {
        self.inner
            .reconstruct_data(shards)
            .map_err(|_| CryptoError::Erasure {
                reason: "too few shards or length mismatch",
            })
    }
}

/// Length of each shard when `len` bytes are split into `k` data shards (zero-padded).
/// Never zero, so that even an empty segment has a well-defined shard.
pub fn shard_len(len: usize, k: usize) -> usize {
    len.div_ceil(k).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(code: &ReedSolomon, data: &[u8]) -> Vec<Vec<u8>> {
        let k = code.data_shards();
        let n = code.total_shards();
        let len = shard_len(data.len(), k);
        let mut padded = data.to_vec();
        padded.resize(len * k, 0);
        let data_shards: Vec<&[u8]> = padded.chunks(len).collect();
        let mut parity = vec![vec![0u8; len]; n - k];
        let mut parity_refs: Vec<&mut [u8]> = parity.iter_mut().map(|p| p.as_mut_slice()).collect();
        code.encode(&data_shards, &mut parity_refs).unwrap();
        let mut all: Vec<Vec<u8>> = data_shards.iter().map(|s| s.to_vec()).collect();
        all.extend(parity);
        all
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(ReedSolomon::new(0, 4).is_err());
        assert!(ReedSolomon::new(5, 4).is_err());
        assert!(ReedSolomon::new(4, 4).is_err());
        assert!(ReedSolomon::new(2, 4).is_ok());
    }

    #[test]
    fn too_few_shards_fail() {
        let code = ReedSolomon::new(2, 4).unwrap();
        let shards = encode_all(&code, b"hello world");
        let mut opt: Vec<Option<Vec<u8>>> = shards.into_iter().map(Some).collect();
        opt[0] = None;
        opt[1] = None;
        opt[2] = None;
        assert!(code.reconstruct(&mut opt).is_err());
    }

    proptest! {
        #[test]
        fn any_k_of_n_rebuild(data in proptest::collection::vec(any::<u8>(), 0..3000),
                              k in 1usize..5, extra in 1usize..4, seed in any::<u64>()) {
            let n = k + extra;
            let code = ReedSolomon::new(k, n).unwrap();
            let shards = encode_all(&code, &data);
            // Drop n - k shards chosen by the seed.
            let mut idx: Vec<usize> = (0..n).collect();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                idx.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut opt: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
            for &i in &idx[..n - k] {
                opt[i] = None;
            }
            code.reconstruct(&mut opt).unwrap();
            let rebuilt: Vec<Vec<u8>> = opt.into_iter().map(|s| s.unwrap()).collect();
            prop_assert_eq!(&rebuilt, &shards);
            let joined: Vec<u8> = rebuilt[..k].concat();
            prop_assert_eq!(&joined[..data.len()], &data[..]);
        }
    }
}
