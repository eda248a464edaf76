//! AES-256-GCM for records that fit in memory (a submission's XML, a wrapped key).
//!
//! Layout: `0x01 ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The nonce is random; one key seals far
//! fewer than 2^32 records before it is replaced, which keeps random 96-bit nonces safe (NIST
//! SP 800-38D §8.3). The associated data names the record's place (`project:7/submission:42`),
//! so a ciphertext copied into another row fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::{CryptoError, Key256};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
/// Bytes a sealed record adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// Encrypts `plaintext` bound to `aad`.
pub fn seal(key: &Key256, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(key.expose().into());
    let nonce = crate::random::bytes::<NONCE_LEN>()?;
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Decrypt)?;
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts what [`seal`] produced with the same key and `aad`.
pub fn open(key: &Key256, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (&version, rest) = sealed
        .split_first()
        .ok_or(CryptoError::Format("empty record"))?;
    if version != VERSION {
        return Err(CryptoError::Format("unknown record version"));
    }
    if rest.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Format("record too short"));
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.expose().into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let k = Key256::generate().unwrap();
        let sealed = seal(&k, b"project:1/sub:2", b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(open(&k, b"project:1/sub:2", &sealed).unwrap(), b"hello");
        assert_eq!(
            open(&k, b"project:1/sub:3", &sealed),
            Err(CryptoError::Decrypt)
        );
        let other = Key256::generate().unwrap();
        assert_eq!(
            open(&other, b"project:1/sub:2", &sealed),
            Err(CryptoError::Decrypt)
        );
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert_eq!(
            open(&k, b"project:1/sub:2", &flipped),
            Err(CryptoError::Decrypt)
        );
        assert!(open(&k, b"x", &sealed[..10]).is_err());
        assert!(open(&k, b"x", &[]).is_err());
    }

    #[test]
    fn nonces_differ() {
        let k = Key256::generate().unwrap();
        assert_ne!(seal(&k, b"a", b"m").unwrap(), seal(&k, b"a", b"m").unwrap());
    }
}
