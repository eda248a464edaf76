//! Fieldvault's cryptography, built only from reviewed primitives (RustCrypto).
//!
//! - [`keyring`]: the master key, the per-project data keys it wraps, and the key check that
//!   tells a wrong master key from a damaged store (M2).
//! - [`envelope`]: AES-256-GCM for small records, every ciphertext bound to its place by
//!   associated data.
//! - [`stream`]: chunked STREAM encryption for blobs of any size in constant memory; detects
//!   tampering, reordering and truncation.
//! - [`password`]: Django-compatible PBKDF2-SHA256 password hashes (M1).
//! - [`secret`]: wrappers that zeroize on drop and never print their contents.
#![warn(missing_docs)]

pub mod envelope;
pub mod error;
pub mod keyring;
pub mod mac;
pub mod odk;
pub mod password;
pub mod random;
pub mod secret;
pub mod stream;
pub mod totp;

pub use error::CryptoError;
pub use keyring::{DataKey, MasterKey};
pub use secret::{Key256, SecretString};
