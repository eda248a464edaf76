//! Password hashes in Django's `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>` format (M1).
//!
//! Using Django's exact format means users exported from KoboToolbox (a Django application) log
//! in with their existing passwords. A stored hash with fewer iterations than the current policy
//! verifies, and [`needs_rehash`] tells the caller to store a fresh hash at that login.

use base64::Engine as _;
use pbkdf2::pbkdf2_hmac;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{CryptoError, SecretString};

/// Django 5.2's default iteration count.
pub const DEFAULT_ITERATIONS: u32 = 1_000_000;
/// Refuse stored hashes beyond this: verifying them would be a denial of service.
pub const MAX_ITERATIONS: u32 = 20_000_000;
/// Longest password we hash. Bounds the work an unauthenticated request can cause.
pub const MAX_PASSWORD_BYTES: usize = 1024;
const ALGORITHM: &str = "pbkdf2_sha256";
const SALT_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Django's salt length (`get_random_string(22)`, ~131 bits).
const SALT_LEN: usize = 22;

/// A parsed Django PBKDF2-SHA256 hash.
#[derive(PartialEq, Eq)]
pub struct PasswordHash {
    iterations: u32,
    salt: String,
    hash: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PasswordHash(pbkdf2_sha256, {} iterations)",
            self.iterations
        )
    }
}

impl PasswordHash {
    /// Parses the Django string form.
    pub fn parse(encoded: &str) -> Result<Self, CryptoError> {
        let mut parts = encoded.split('$');
        let (Some(alg), Some(iter), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(CryptoError::HashFormat);
        };
        if alg != ALGORITHM || salt.is_empty() || salt.contains('$') {
            return Err(CryptoError::HashFormat);
        }
        let iterations: u32 = iter.parse().map_err(|_| CryptoError::HashFormat)?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(CryptoError::HashFormat);
        }
        let hash = base64::engine::general_purpose::STANDARD
            .decode(hash)
            .map_err(|_| CryptoError::HashFormat)?;
        if hash.is_empty() || hash.len() > 64 {
            return Err(CryptoError::HashFormat);
        }
        Ok(Self {
            iterations,
            salt: salt.to_owned(),
            hash,
        })
    }

    /// The Django string form.
    pub fn encode(&self) -> String {
        format!(
            "{ALGORITHM}${}${}${}",
            self.iterations,
            self.salt,
            base64::engine::general_purpose::STANDARD.encode(&self.hash)
        )
    }

    /// Iterations this hash was made with.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }
}

/// True if `encoded` looks like a hash this module can verify.
pub fn is_supported(encoded: &str) -> bool {
    PasswordHash::parse(encoded).is_ok()
}

/// Hashes `password` with a fresh Django-style salt. CPU-heavy: call from a blocking thread.
pub fn hash(password: &SecretString, iterations: u32) -> Result<String, CryptoError> {
    let pw = password.expose().as_bytes();
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(CryptoError::Limit("password too long"));
    }
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return Err(CryptoError::Limit("iterations out of range"));
    }
    let mut raw = [0u8; SALT_LEN];
    crate::random::fill(&mut raw)?;
    // Rejection-free mapping: 256 % 62 bias is at most 4/256 per char; Django itself uses
    // `secrets.choice`, but salts need uniqueness, not uniformity.
    let salt: String = raw
        .iter()
        .map(|b| char::from(SALT_CHARS[usize::from(*b) % SALT_CHARS.len()]))
        .collect();
    let mut out = [0u8; 32];
    pbkdf2_hmac::<Sha256>(pw, salt.as_bytes(), iterations, &mut out);
    Ok(PasswordHash {
        iterations,
        salt,
        hash: out.to_vec(),
    }
    .encode())
}

/// Checks `password` against a stored Django hash in constant time. CPU-heavy.
pub fn verify(password: &SecretString, encoded: &str) -> Result<bool, CryptoError> {
    let parsed = PasswordHash::parse(encoded)?;
    let pw = password.expose().as_bytes();
    if pw.len() > MAX_PASSWORD_BYTES {
        return Ok(false);
    }
    let mut out = vec![0u8; parsed.hash.len()];
    pbkdf2_hmac::<Sha256>(pw, parsed.salt.as_bytes(), parsed.iterations, &mut out);
    Ok(bool::from(out.ct_eq(&parsed.hash)))
}

/// True when a stored hash is weaker than the current policy and should be replaced at login.
pub fn needs_rehash(encoded: &str, iterations: u32) -> bool {
    PasswordHash::parse(encoded).map_or(true, |h| h.iterations < iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python's `hashlib.pbkdf2_hmac("sha256", b"hunter2-fieldvault",
    /// b"seasalt1234567890abcde", 1000)`, which is exactly what Django's `PBKDF2PasswordHasher`
    /// calls, then laid out in Django's `algorithm$iterations$salt$base64` form.
    const DJANGO_1000: &str =
        "pbkdf2_sha256$1000$seasalt1234567890abcde$H9wBp6DCHfpVrUr/Fxjl/sFpttsvKkR0W570B8+52fU=";

    #[test]
    fn hash_verify_round_trip() {
        let pw = SecretString::from("a long enough passphrase");
        let h = hash(&pw, 1000).unwrap();
        assert!(h.starts_with("pbkdf2_sha256$1000$"));
        assert!(verify(&pw, &h).unwrap());
        assert!(!verify(&SecretString::from("wrong"), &h).unwrap());
        assert!(needs_rehash(&h, 2000));
        assert!(!needs_rehash(&h, 1000));
    }

    #[test]
    fn known_django_hash_verifies() {
        let parsed = PasswordHash::parse(DJANGO_1000).unwrap();
        assert_eq!(parsed.encode(), DJANGO_1000);
        assert!(verify(&SecretString::from("hunter2-fieldvault"), DJANGO_1000).unwrap());
        assert!(!verify(&SecretString::from("hunter3-fieldvault"), DJANGO_1000).unwrap());
    }

    #[test]
    fn malformed_hashes_are_errors() {
        for bad in [
            "",
            "md5$abc$def",
            "pbkdf2_sha256$x$salt$aGFzaA==",
            "pbkdf2_sha256$0$salt$aGFzaA==",
            "pbkdf2_sha256$99999999999$salt$aGFzaA==",
            "pbkdf2_sha256$1000$$aGFzaA==",
            "pbkdf2_sha256$1000$salt$!!!",
            "pbkdf2_sha256$1000$salt$aGFzaA==$extra",
            "bcrypt_sha256$$2b$12$abc",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
            assert!(verify(&SecretString::from("x"), bad).is_err(), "{bad}");
        }
    }
}
