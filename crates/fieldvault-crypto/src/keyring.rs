//! The keyring (M2): one master key wraps a data key per project and the database key.
//!
//! ```text
//!   master key ──HKDF "wrap"──▶ KEK ──AES-GCM(aad = owner)──▶ wrapped data keys (in the store)
//!              └─HKDF "check"─▶ HMAC key ──▶ key check (in the store; tells a wrong key early)
//! ```
//! Data is never encrypted under the master key itself, so `fieldvault keys rotate` only re-wraps
//! the data keys. Destroying a project's wrapped data key crypto-shreds the project.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{CryptoError, Key256, SecretString, envelope};

/// Argon2id cost for passphrase-derived master keys: 64 MiB, 3 passes (OWASP's first choice).
const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
const ARGON2_PASSES: u32 = 3;
/// Minimum length of a passphrase that becomes a master key.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// Salt length for passphrase derivation.
pub const PASSPHRASE_SALT_LEN: usize = 16;

/// The root key. Only ever used to derive the key-wrapping key and the key check.
#[derive(Clone)]
pub struct MasterKey {
    kek: Key256,
    check_key: Key256,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Builds the keyring root from 32 raw bytes.
    pub fn from_key(root: &Key256) -> Result<Self, CryptoError> {
        let hk = Hkdf::<Sha256>::new(Some(b"fieldvault master key v1"), root.expose());
        let mut kek = [0u8; 32];
        let mut check = [0u8; 32];
        hk.expand(b"key-wrap", &mut kek)
            .map_err(|_| CryptoError::InvalidKey("hkdf"))?;
        hk.expand(b"key-check", &mut check)
            .map_err(|_| CryptoError::InvalidKey("hkdf"))?;
        Ok(Self {
            kek: Key256::from_bytes(kek),
            check_key: Key256::from_bytes(check),
        })
    }

    /// Parses the base64 text form used in key files and `FIELDVAULT_MASTER_KEY`.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        Self::from_key(&decode_key_base64(text)?)
    }

    /// Derives the root from a passphrase with Argon2id and a stored, non-secret salt.
    pub fn from_passphrase(passphrase: &SecretString, salt: &[u8]) -> Result<Self, CryptoError> {
        if passphrase.expose().chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(CryptoError::InvalidKey(
                "passphrase must be at least 12 characters",
            ));
        }
        let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, Some(32))
            .map_err(|_| CryptoError::InvalidKey("argon2 parameters"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(passphrase.expose().as_bytes(), salt, &mut out)
            .map_err(|_| CryptoError::InvalidKey("argon2 derivation failed"))?;
        Self::from_key(&Key256::from_bytes(out))
    }

    /// A value the store keeps to recognise this master key without revealing it.
    pub fn key_check(&self) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.check_key.expose())
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(b"fieldvault key check v1");
        mac.finalize().into_bytes().into()
    }

    /// True when `stored` is this key's [`key_check`](Self::key_check) (constant time).
    pub fn matches_check(&self, stored: &[u8]) -> bool {
        stored.len() == 32 && bool::from(self.key_check().ct_eq(stored))
    }

    /// A short public fingerprint (first 8 bytes of the key check, hex) for logs and `config show`.
    pub fn fingerprint(&self) -> String {
        crate::random::to_hex(&self.key_check()[..8])
    }

    /// Wraps a key for the owner named by `aad` (e.g. `b"project:7"`).
    pub fn wrap(&self, key: &Key256, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        envelope::seal(&self.kek, aad, key.expose())
    }

    /// A key for one local purpose (e.g. `b"intake-journal v1"`), derived from the key-wrapping
    /// key with HKDF; different purposes give independent keys, none of which reveals the master.
    pub fn purpose_key(&self, purpose: &[u8]) -> Result<Key256, CryptoError> {
        let mut label = b"purpose:".to_vec();
        label.extend_from_slice(purpose);
        derive_subkey(&self.kek, &label)
    }

    /// Unwraps what [`wrap`](Self::wrap) produced for the same owner.
    pub fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Key256, CryptoError> {
        let raw = zeroize::Zeroizing::new(envelope::open(&self.kek, aad, wrapped)?);
        Key256::from_slice(&raw)
    }
}

/// HMAC accepts keys of any length, so construction cannot fail; this documents that invariant.
fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC-SHA256 takes any key length (RFC 2104 §2); `new_from_slice` only errs for fixed-size MACs.
    #[allow(clippy::expect_used)]
    <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).expect("HMAC accepts any key length")
}

/// A per-project (or per-purpose) data key. Everything stored is encrypted under one of these.
pub type DataKey = Key256;

/// Decodes a 32-byte key from standard or URL-safe base64, ignoring surrounding whitespace.
pub fn decode_key_base64(text: &str) -> Result<Key256, CryptoError> {
    use base64::Engine as _;
    let t = text.trim();
    let raw = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
            .map_err(|_| CryptoError::InvalidKey("not valid base64"))?,
    );
    Key256::from_slice(&raw).map_err(|_| CryptoError::InvalidKey("a master key is 32 bytes"))
}

/// Encodes a 32-byte key as standard base64 (the key-file and environment form).
pub fn encode_key_base64(key: &Key256) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key.expose())
}

/// Derives a purpose-specific subkey from a data key (e.g. a keyed-hash key for redaction).
pub fn derive_subkey(key: &Key256, purpose: &[u8]) -> Result<Key256, CryptoError> {
    let hk = Hkdf::<Sha256>::new(None, key.expose());
    let mut out = [0u8; 32];
    hk.expand(purpose, &mut out)
        .map_err(|_| CryptoError::InvalidKey("hkdf"))?;
    Ok(Key256::from_bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_bound_to_owner() {
        let mk = MasterKey::from_key(&Key256::generate().unwrap()).unwrap();
        let dk = Key256::generate().unwrap();
        let w = mk.wrap(&dk, b"project:1").unwrap();
        assert_eq!(mk.unwrap(&w, b"project:1").unwrap(), dk);
        assert!(mk.unwrap(&w, b"project:2").is_err());
        let other = MasterKey::from_key(&Key256::generate().unwrap()).unwrap();
        assert!(other.unwrap(&w, b"project:1").is_err());
    }

    #[test]
    fn key_check_tells_keys_apart() {
        let root = Key256::generate().unwrap();
        let a = MasterKey::from_key(&root).unwrap();
        let a2 = MasterKey::from_base64(&encode_key_base64(&root)).unwrap();
        let b = MasterKey::from_key(&Key256::generate().unwrap()).unwrap();
        assert!(a2.matches_check(&a.key_check()));
        assert!(!b.matches_check(&a.key_check()));
        assert!(!a.matches_check(&[0u8; 5]));
        assert_eq!(a.fingerprint().len(), 16);
    }

    #[test]
    fn base64_errors() {
        assert!(MasterKey::from_base64("not base64!!").is_err());
        assert!(MasterKey::from_base64("AAAA").is_err());
    }

    #[test]
    fn passphrase_is_deterministic_per_salt() {
        let p = SecretString::from("correct horse battery staple");
        let a = MasterKey::from_passphrase(&p, b"0123456789abcdef").unwrap();
        let b = MasterKey::from_passphrase(&p, b"0123456789abcdef").unwrap();
        let c = MasterKey::from_passphrase(&p, b"fedcba9876543210").unwrap();
        assert!(a.matches_check(&b.key_check()));
        assert!(!a.matches_check(&c.key_check()));
        assert!(
            MasterKey::from_passphrase(&SecretString::from("short"), b"0123456789abcdef").is_err()
        );
    }
}
