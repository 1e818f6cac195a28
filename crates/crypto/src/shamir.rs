//! Shamir secret sharing of 32-byte keys over GF(2^8), through `vsss-rs`.
//!
//! A share is `[x, y_0, …, y_31]`: the participant identifier `x` (1..=255) followed by
//! one byte of polynomial value per secret byte. With threshold `k`, any `k` shares give
//! the secret and any `k − 1` reveal nothing about it.

use std::fmt;

use rand_core::OsRng;
use vsss_rs::Gf256;
use zeroize::Zeroizing;

use crate::CryptoError;

/// Length of a secret that can be split.
pub const SECRET_LEN: usize = 32;
/// Length of one encoded share (identifier + one byte per secret byte).
pub const SHARE_LEN: usize = SECRET_LEN + 1;

/// One share of a secret. Zeroized on drop; `Debug` shows only the identifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Share(Zeroizing<Vec<u8>>);

impl Share {
    /// Parses an encoded share, checking its length and identifier.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != SHARE_LEN {
            return Err(CryptoError::Sharing {
                reason: "share has the wrong length",
            });
        }
        if bytes[0] == 0 {
            return Err(CryptoError::Sharing {
                reason: "share identifier 0 is reserved",
            });
        }
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// The share's identifier `x` (1-based participant number).
    pub fn id(&self) -> u8 {
        self.0[0]
    }

    /// The encoded share.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Share(id={}, <redacted>)", self.id())
    }
}

/// Splits `secret` into `n` shares with identifiers `1..=n`, any `threshold` of which
/// recover it. Requires `2 <= threshold <= n <= 255`.
pub fn split(
    secret: &[u8; SECRET_LEN],
    threshold: usize,
    n: usize,
) -> Result<Vec<Share>, CryptoError> {
    if threshold < 2 || threshold > n || n > 255 {
        return Err(CryptoError::Sharing {
            reason: "need 2 <= threshold <= n <= 255",
        });
    }
    let shares =
        Gf256::split_array(threshold, n, secret, OsRng).map_err(|_| CryptoError::Sharing {
            reason: "split failed",
        })?;
    Ok(shares
        .into_iter()
        .map(|s| Share(Zeroizing::new(s)))
        .collect())
}

/// Recovers the secret from exactly `threshold` distinct shares.
///
/// Shamir shares carry no integrity: callers must check each share against a trusted
/// digest first (the store binds every share's hash in signed metadata).
pub fn combine(shares: &[Share]) -> Result<Zeroizing<[u8; SECRET_LEN]>, CryptoError> {
    check_distinct(shares)?;
    let raw: Vec<Vec<u8>> = shares.iter().map(|s| s.0.to_vec()).collect();
    let raw = Zeroizing::new(raw);
    let secret =
        Zeroizing::new(
            Gf256::combine_array(&raw[..]).map_err(|_| CryptoError::Sharing {
                reason: "combine failed",
            })?,
        );
    let mut out = Zeroizing::new([0u8; SECRET_LEN]);
    if secret.len() != SECRET_LEN {
        return Err(CryptoError::Sharing {
            reason: "combined secret has the wrong length",
        });
    }
    out.copy_from_slice(&secret);
    Ok(out)
}

/// Recomputes the share with identifier `id` from `threshold` other shares, so that a
/// cloud that lost its share can be repaired without changing the key.
///
/// In GF(2^8) addition is XOR, so `q(y) = p(y ⊕ id)` is a polynomial of the same degree
/// with `q(x ⊕ id) = p(x)` and `q(0) = p(id)`. Relabelling every share `x → x ⊕ id` and
/// combining at zero therefore yields `p(id)`, using only the library's interpolation.
pub fn reshare(shares: &[Share], id: u8) -> Result<Share, CryptoError> {
    if id == 0 {
        return Err(CryptoError::Sharing {
            reason: "share identifier 0 is reserved",
        });
    }
    check_distinct(shares)?;
    if shares.iter().any(|s| s.id() == id) {
        return Err(CryptoError::Sharing {
            reason: "the share to rebuild is among the inputs",
        });
    }
    let relabelled: Vec<Share> = shares
        .iter()
        .map(|s| {
            let mut b = s.0.clone();
            b[0] ^= id;
            Share(b)
        })
        .collect();
    let value = combine(&relabelled)?;
    let mut out = Zeroizing::new(Vec::with_capacity(SHARE_LEN));
    out.push(id);
    out.extend_from_slice(value.as_ref());
    Ok(Share(out))
}

fn check_distinct(shares: &[Share]) -> Result<(), CryptoError> {
    if shares.len() < 2 {
        return Err(CryptoError::Sharing {
            reason: "need at least two shares",
        });
    }
    for (i, a) in shares.iter().enumerate() {
        if shares[i + 1..].iter().any(|b| b.id() == a.id()) {
            return Err(CryptoError::Sharing {
                reason: "duplicate share identifiers",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn any_threshold_subset_recovers_and_fewer_do_not() {
        let secret = [0x5a; 32];
        let shares = split(&secret, 2, 4).unwrap();
        assert_eq!(shares.len(), 4);
        for i in 0..4 {
            for j in 0..4 {
                if i != j {
                    let got = combine(&[shares[i].clone(), shares[j].clone()]).unwrap();
                    assert_eq!(*got, secret);
                }
            }
        }
        assert!(combine(&shares[..1]).is_err());
    }

    #[test]
    fn reshare_rebuilds_the_lost_share_exactly() {
        let secret = [7u8; 32];
        let shares = split(&secret, 3, 7).unwrap();
        for lost in 0..7 {
            let others: Vec<Share> = shares
                .iter()
                .filter(|s| s.id() != shares[lost].id())
                .take(3)
                .cloned()
                .collect();
            let rebuilt = reshare(&others, shares[lost].id()).unwrap();
            assert_eq!(
                rebuilt, shares[lost],
                "share {lost} must be rebuilt bit for bit"
            );
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(split(&[0; 32], 1, 4).is_err());
        assert!(split(&[0; 32], 5, 4).is_err());
        assert!(Share::from_bytes(&[1; 10]).is_err());
        assert!(Share::from_bytes(&[0; SHARE_LEN]).is_err());
        let s = split(&[1; 32], 2, 4).unwrap();
        assert!(combine(&[s[0].clone(), s[0].clone()]).is_err());
        assert!(reshare(&s[..2], s[0].id()).is_err());
    }

    proptest! {
        #[test]
        fn roundtrip_any_secret(secret in any::<[u8; 32]>(), k in 2usize..5, extra in 0usize..4) {
            let n = k + extra;
            let shares = split(&secret, k, n).unwrap();
            let got = combine(&shares[n - k..]).unwrap();
            prop_assert_eq!(*got, secret);
        }
    }
}
