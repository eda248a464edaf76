//! TOTP second factor (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps — what every authenticator
//! app speaks), on the `totp-rs` crate. The clock is an argument so tests use the RFC's vectors.
//! Accepting a code once only is the caller's job: [`verify`] returns the matched step, and the
//! store records the last accepted step atomically.

use zeroize::Zeroizing;

use crate::CryptoError;

/// Secret length in bytes (160 bits, as RFC 4226 recommends).
pub const SECRET_LEN: usize = 20;
const DIGITS: u8 = 6;
const STEP_SECS: u64 = 30;
/// Steps of clock drift tolerated either side.
const SKEW: u16 = 1;

fn totp(secret: &[u8], account: &str) -> Result<totp_rs::Totp, CryptoError> {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_step_duration(STEP_SECS)
        .with_skew(SKEW)
        .with_secret(secret.to_vec())
        .with_issuer(Some("Fieldvault"))
        .with_account_name(account)
        .build()
        .map_err(|_| CryptoError::InvalidKey("TOTP secret"))
}

/// A fresh secret.
pub fn generate_secret() -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    Ok(Zeroizing::new(
        crate::random::bytes::<SECRET_LEN>()?.to_vec(),
    ))
}

/// The base32 secret and the `otpauth://` URL an authenticator app scans.
pub fn enrollment(secret: &[u8], account: &str) -> Result<(String, String), CryptoError> {
    let t = totp(secret, account)?;
    let url = t
        .to_url()
        .map_err(|_| CryptoError::InvalidKey("TOTP account name"))?;
    Ok((t.secret().to_base32(), url))
}

/// The step a code is valid for at `unix_secs` (± one step), if any.
pub fn verify(secret: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, "x").ok()?.check(code, unix_secs)
}

/// The code for `unix_secs` (what the user's app shows).
pub fn code(secret: &[u8], unix_secs: u64) -> Result<String, CryptoError> {
    Ok(totp(secret, "x")?.generate(unix_secs).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1, secret "12345678901234567890" (the last six of its 8 digits).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code(secret, t).unwrap(), want, "T={t}");
            assert!(verify(secret, want, t).is_some());
        }
        assert_eq!(verify(secret, "287082", 59), Some(1));
        assert!(
            verify(secret, "287082", 59 + 90).is_none(),
            "outside the skew window"
        );
        assert!(verify(secret, "28708", 59).is_none());
        assert!(verify(secret, "abcdef", 59).is_none());
        let (b32, url) = enrollment(secret, "alice").unwrap();
        assert_eq!(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert!(url.starts_with("otpauth://totp/Fieldvault:alice?"), "{url}");
        assert!(url.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"));
    }
}
