//! Secret-holding types: zeroized on drop, `[redacted]` in every `Debug`/`Display`.
//!
//! Nothing secret may reach a log line, an error message or a panic message; these wrappers make
//! that the default rather than a matter of care at each call site.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::CryptoError;

/// 256 bits of key material.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Key256([u8; 32]);

impl Key256 {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Takes exactly 32 bytes from a slice.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::InvalidKey("expected 32 bytes"))?;
        Ok(Self(arr))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self(crate::random::bytes::<32>()?))
    }

    /// The raw bytes; keep the borrow short.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key256([redacted])")
    }
}

/// A secret string (password, token, passphrase).
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a string.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret text; keep the borrow short and never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_contents() {
        let k = Key256::from_bytes([0xAB; 32]);
        assert!(!format!("{k:?}").contains("ab") && !format!("{k:?}").contains("171"));
        let s = SecretString::from("hunter2-password");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
    }
}
