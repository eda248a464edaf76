//! Keyed hashes and plain digests used to look secrets up without storing them.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// HMAC-SHA256 of `parts` joined unambiguously (each prefixed by its length).
pub fn hmac_sha256(key: &crate::Key256, parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length (RFC 2104 §2), so this cannot fail for a 32-byte key.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key.expose()) {
        Ok(m) => m,
        Err(_) => return [0u8; 32],
    };
    for p in parts {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_unambiguous() {
        let k = crate::Key256::from_bytes([7; 32]);
        assert_ne!(
            hmac_sha256(&k, &[b"ab", b"c"]),
            hmac_sha256(&k, &[b"a", b"bc"])
        );
        assert_eq!(hmac_sha256(&k, &[b"x"]), hmac_sha256(&k, &[b"x"]));
        assert_eq!(
            crate::random::to_hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
