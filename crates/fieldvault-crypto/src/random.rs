//! Random bytes from the operating system; the only source of randomness for keys and nonces.

use crate::CryptoError;

/// Fills `buf` from the OS CSPRNG.
pub fn fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::getrandom(buf).map_err(|_| CryptoError::Random)
}

/// `N` fresh random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    fill(&mut b)?;
    Ok(b)
}

/// A random token of `n` bytes, URL-safe base64 without padding.
pub fn token(n: usize) -> Result<String, CryptoError> {
    use base64::Engine as _;
    let mut b = vec![0u8; n];
    fill(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// A random lowercase hex string of `n` bytes (2n characters).
pub fn hex(n: usize) -> Result<String, CryptoError> {
    let mut b = vec![0u8; n];
    fill(&mut b)?;
    Ok(to_hex(&b))
}

/// Lowercase hex encoding.
pub fn to_hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 0x0f)]));
    }
    s
}
