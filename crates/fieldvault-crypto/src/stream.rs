//! Chunked authenticated encryption for blobs of any size, in constant memory.
//!
//! This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015) as implemented by
//! RustCrypto's `aead::stream` (big-endian 32-bit counter + last-chunk flag in the nonce) over
//! AES-256-GCM. Each blob gets its own key, derived with HKDF-SHA256 from the data key and a
//! random 32-byte salt, so nonce reuse across blobs is impossible in practice.
//!
//! ```text
//! header  = "FVS1" ‖ salt (32) ‖ nonce prefix (7)                      43 bytes
//! chunk i = AES-GCM(blob key, prefix ‖ i ‖ last?, aad, plaintext[64 KiB])  + 16-byte tag
//! ```
//! Every chunk but the last holds exactly [`CHUNK_LEN`] plaintext bytes; the last holds 0..=CHUNK_LEN
//! and is sealed with the "last" flag. Altering a byte fails that chunk; swapping chunks fails
//! (the counter is in the nonce); cutting the stream fails at [`StreamOpener::finish`] (the final
//! flag is missing). Plaintext is released chunk by chunk, so a reader must treat output as
//! provisional until `finish` succeeds.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{KeyInit, Payload};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::{CryptoError, Key256};

/// Plaintext bytes per chunk.
pub const CHUNK_LEN: usize = 64 * 1024;
const TAG_LEN: usize = 16;
const MAGIC: &[u8; 4] = b"FVS1";
const SALT_LEN: usize = 32;
const PREFIX_LEN: usize = 7;
/// Length of the stream header.
pub const HEADER_LEN: usize = MAGIC.len() + SALT_LEN + PREFIX_LEN;

/// Size of the ciphertext for `plaintext_len` bytes of plaintext.
pub fn ciphertext_len(plaintext_len: u64) -> u64 {
    let chunk = CHUNK_LEN as u64;
    // At least one chunk (an empty stream still has its final chunk); a full last chunk is not
    // followed by an empty one.
    let chunks = plaintext_len.div_ceil(chunk).max(1);
    HEADER_LEN as u64 + plaintext_len + chunks * TAG_LEN as u64
}

fn blob_cipher(key: &Key256, salt: &[u8]) -> Result<Aes256Gcm, CryptoError> {
    let hk = Hkdf::<Sha256>::new(Some(salt), key.expose());
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    hk.expand(b"fieldvault blob v1", k.as_mut())
        .map_err(|_| CryptoError::InvalidKey("hkdf"))?;
    Ok(Aes256Gcm::new(GenericArray::from_slice(k.as_ref())))
}

/// Encrypts a stream: feed plaintext to [`update`](Self::update), then call [`finish`](Self::finish).
pub struct StreamSealer {
    enc: EncryptorBE32<Aes256Gcm>,
    aad: Vec<u8>,
    pending: Vec<u8>,
}

impl StreamSealer {
    /// Starts a stream bound to `aad`; returns the sealer and the header to write first.
    pub fn new(key: &Key256, aad: &[u8]) -> Result<(Self, Vec<u8>), CryptoError> {
        let salt = crate::random::bytes::<SALT_LEN>()?;
        let prefix = crate::random::bytes::<PREFIX_LEN>()?;
        let cipher = blob_cipher(key, &salt)?;
        let enc = EncryptorBE32::from_aead(cipher, GenericArray::from_slice(&prefix));
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&salt);
        header.extend_from_slice(&prefix);
        let sealer = Self {
            enc,
            aad: aad.to_vec(),
            pending: Vec::with_capacity(CHUNK_LEN),
        };
        Ok((sealer, header))
    }

    /// Encrypts as many whole chunks as `data` completes, appending ciphertext to `out`.
    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        while !data.is_empty() {
            // A full chunk is only sealed once more data follows it: the last chunk must carry
            // the final flag, and only `finish` knows which chunk is last.
            if self.pending.len() == CHUNK_LEN {
                self.seal_pending(out)?;
            }
            let take = (CHUNK_LEN - self.pending.len()).min(data.len());
            let (head, rest) = data.split_at(take);
            self.pending.extend_from_slice(head);
            data = rest;
        }
        Ok(())
    }

    fn seal_pending(&mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let ct = self
            .enc
            .encrypt_next(Payload {
                msg: &self.pending,
                aad: &self.aad,
            })
            .map_err(|_| CryptoError::Limit("stream too long"))?;
        out.extend_from_slice(&ct);
        self.pending.clear();
        Ok(())
    }

    /// Seals the final chunk (possibly empty).
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let ct = self
            .enc
            .encrypt_last(Payload {
                msg: &self.pending,
                aad: &self.aad,
            })
            .map_err(|_| CryptoError::Limit("stream too long"))?;
        out.extend_from_slice(&ct);
        Ok(())
    }
}

enum OpenerState {
    Header(Key256),
    Body(Box<DecryptorBE32<Aes256Gcm>>),
}

/// Decrypts a stream produced by [`StreamSealer`], verifying every chunk.
pub struct StreamOpener {
    state: OpenerState,
    aad: Vec<u8>,
    buf: Vec<u8>,
}

impl StreamOpener {
    /// Prepares to decrypt a stream bound to `aad`.
    pub fn new(key: &Key256, aad: &[u8]) -> Self {
        Self {
            state: OpenerState::Header(key.clone()),
            aad: aad.to_vec(),
            buf: Vec::with_capacity(CHUNK_LEN + TAG_LEN),
        }
    }

    /// Feeds ciphertext; appends verified plaintext of every complete non-final chunk to `out`.
    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        if let OpenerState::Header(key) = &self.state {
            let need = HEADER_LEN - self.buf.len();
            let take = need.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < HEADER_LEN {
                return Ok(());
            }
            if &self.buf[..MAGIC.len()] != MAGIC {
                return Err(CryptoError::Format("not a Fieldvault encrypted stream"));
            }
            let salt = &self.buf[MAGIC.len()..MAGIC.len() + SALT_LEN];
            let prefix = &self.buf[MAGIC.len() + SALT_LEN..HEADER_LEN];
            let cipher = blob_cipher(key, salt)?;
            let dec = DecryptorBE32::from_aead(cipher, GenericArray::from_slice(prefix));
            self.state = OpenerState::Body(Box::new(dec));
            self.buf.clear();
        }
        let OpenerState::Body(dec) = &mut self.state else {
            return Ok(());
        };
        const FULL: usize = CHUNK_LEN + TAG_LEN;
        while !data.is_empty() {
            // Hold back a full chunk until more bytes arrive: it may be the final one.
            if self.buf.len() == FULL {
                let pt = dec
                    .decrypt_next(Payload {
                        msg: &self.buf,
                        aad: &self.aad,
                    })
                    .map_err(|_| CryptoError::Decrypt)?;
                out.extend_from_slice(&pt);
                self.buf.clear();
            }
            let take = (FULL - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Verifies the final chunk and appends its plaintext. Fails if the stream was cut short.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let OpenerState::Body(dec) = self.state else {
            return Err(CryptoError::Truncated);
        };
        if self.buf.len() < TAG_LEN {
            return Err(CryptoError::Truncated);
        }
        let pt = dec
            .decrypt_last(Payload {
                msg: &self.buf,
                aad: &self.aad,
            })
            .map_err(|_| CryptoError::Decrypt)?;
        out.extend_from_slice(&pt);
        Ok(())
    }
}

/// Encrypts a whole buffer (convenience for tests and small blobs).
pub fn seal_all(key: &Key256, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (mut s, mut out) = StreamSealer::new(key, aad)?;
    out.reserve(plaintext.len() + 64);
    s.update(plaintext, &mut out)?;
    s.finish(&mut out)?;
    Ok(out)
}

/// Decrypts a whole buffer.
pub fn open_all(key: &Key256, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut o = StreamOpener::new(key, aad);
    let mut out = Vec::with_capacity(ciphertext.len());
    o.update(ciphertext, &mut out)?;
    o.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_chunk_edges() {
        let k = Key256::generate().unwrap();
        for n in [
            0,
            1,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            CHUNK_LEN + 1,
            3 * CHUNK_LEN,
            200_000,
        ] {
            let pt = data(n);
            let ct = seal_all(&k, b"blob:a", &pt).unwrap();
            assert_eq!(ct.len() as u64, ciphertext_len(n as u64), "n={n}");
            assert_eq!(open_all(&k, b"blob:a", &ct).unwrap(), pt, "n={n}");
        }
    }

    #[test]
    fn byte_at_a_time_feeding_matches() {
        let k = Key256::generate().unwrap();
        let pt = data(CHUNK_LEN * 2 + 17);
        let (mut s, mut ct) = StreamSealer::new(&k, b"x").unwrap();
        for piece in pt.chunks(977) {
            s.update(piece, &mut ct).unwrap();
        }
        s.finish(&mut ct).unwrap();
        let mut o = StreamOpener::new(&k, b"x");
        let mut out = Vec::new();
        for piece in ct.chunks(1) {
            o.update(piece, &mut out).unwrap();
        }
        o.finish(&mut out).unwrap();
        assert_eq!(out, pt);
    }

    #[test]
    fn rejects_tampering_reordering_truncation_and_wrong_binding() {
        let k = Key256::generate().unwrap();
        let pt = data(CHUNK_LEN * 3 + 5);
        let ct = seal_all(&k, b"blob:a", &pt).unwrap();
        let full = CHUNK_LEN + TAG_LEN;

        let mut flipped = ct.clone();
        flipped[HEADER_LEN + 100] ^= 0x01;
        assert_eq!(open_all(&k, b"blob:a", &flipped), Err(CryptoError::Decrypt));

        let mut swapped = ct[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&ct[HEADER_LEN + full..HEADER_LEN + 2 * full]);
        swapped.extend_from_slice(&ct[HEADER_LEN..HEADER_LEN + full]);
        swapped.extend_from_slice(&ct[HEADER_LEN + 2 * full..]);
        assert_eq!(open_all(&k, b"blob:a", &swapped), Err(CryptoError::Decrypt));

        // Cut at a chunk boundary: the remaining last chunk lacks the final flag.
        let cut = &ct[..HEADER_LEN + 2 * full];
        assert_eq!(open_all(&k, b"blob:a", cut), Err(CryptoError::Decrypt));
        // Cut inside the header or right after it.
        assert_eq!(
            open_all(&k, b"blob:a", &ct[..10]),
            Err(CryptoError::Truncated)
        );
        assert_eq!(
            open_all(&k, b"blob:a", &ct[..HEADER_LEN]),
            Err(CryptoError::Truncated)
        );
        // Dropped tail bytes.
        assert!(open_all(&k, b"blob:a", &ct[..ct.len() - 1]).is_err());

        assert_eq!(open_all(&k, b"blob:b", &ct), Err(CryptoError::Decrypt));
        let other = Key256::generate().unwrap();
        assert_eq!(open_all(&other, b"blob:a", &ct), Err(CryptoError::Decrypt));
        let mut bad_magic = ct.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            open_all(&k, b"blob:a", &bad_magic),
            Err(CryptoError::Format(_))
        ));
    }
}
