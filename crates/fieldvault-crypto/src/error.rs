//! Errors of the crypto crate. Messages never contain key material or plaintext.

/// Everything that can go wrong while encrypting, decrypting or hashing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Authentication failed: wrong key, wrong associated data, or altered ciphertext.
    #[error("decryption failed: wrong key, or the data was altered or moved")]
    Decrypt,
    /// A ciphertext stream ended before its final chunk.
    #[error("encrypted stream is truncated")]
    Truncated,
    /// The bytes are not in a format this version understands.
    #[error("not a recognised ciphertext format: {0}")]
    Format(&'static str),
    /// A key was supplied with the wrong length or encoding.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A stored password hash could not be parsed.
    #[error("unrecognised password hash format")]
    HashFormat,
    /// The operating system's random number generator failed.
    #[error("random number generator unavailable")]
    Random,
    /// A limit on a size or a count was exceeded.
    #[error("limit exceeded: {0}")]
    Limit(&'static str),
}
