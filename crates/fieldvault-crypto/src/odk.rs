//! ODK encrypted submissions (the format written by ODK Collect, KoboCollect and Enketo).
//!
//! Format, as specified in `shared/specs/odk-encryption.md`:
//!
//! - a fresh AES-256 key `K` per submission, wrapped with RSAES-OAEP (SHA-256, MGF1-SHA-256,
//!   empty label) under the form's public key → `base64EncryptedKey`;
//! - every file (media in manifest order, then the instance XML as `submission.xml.enc`) is
//!   AES-256-CFB128 of the PKCS#7-padded plaintext, with an IV derived from
//!   `MD5(instanceID ‖ K)` and a counter ([`file_iv`], [`IvSequence`]);
//! - the manifest ([`Manifest`], the `submission.xml` envelope) carries the wrapped key, the
//!   instanceID, the file names and `base64EncryptedElementSignature`: the MD5 of a line-based
//!   summary ([`SignatureSource`]) OAEP-encrypted with the **public** key. Only the private-key
//!   holder can read it and anyone can forge it: it is a consistency check, not a signature.
//!
//! RSA runs in `aws-lc-rs` (constant-time OAEP); AES-CFB is RustCrypto `cfb-mode` over `aes`.
//! There is no MAC: CFB is malleable, integrity rests on the transport and on the checks made
//! after decryption (padding, signature, instanceID consistency).
//!
//! Nothing here does I/O. Errors never carry key material or plaintext.

use std::fmt;

use aes::Aes256;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPair, KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::CryptoError;
use crate::random::to_hex;
use crate::secret::{Key256, SecretString};

/// Name of the encrypted instance XML, as Collect and Enketo write it.
pub const SUBMISSION_XML_ENC: &str = "submission.xml.enc";
/// Root namespace of the manifest as ODK Collect writes it.
pub const COLLECT_MANIFEST_NS: &str = "http://www.opendatakit.org/xforms/encrypted";
/// OpenRosa namespace of `meta/instanceID`.
pub const OPENROSA_NS: &str = "http://openrosa.org/xforms";

/// PBKDF2-HMAC-SHA256 iterations protecting a key written by [`OdkPrivateKey::generate_pem`].
pub const PKCS8_PBKDF2_ITERATIONS: u32 = 600_000;
/// PEM label of a passphrase-encrypted PKCS#8 private key.
const ENCRYPTED_PKCS8_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// AES block size; every ODK ciphertext is a non-zero multiple of it.
const BLOCK: usize = 16;

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// A form's RSA private key (2048–8192 bits). `Debug` never shows key material.
pub struct OdkPrivateKey {
    oaep: OaepPrivateDecryptingKey,
    public: OdkPublicKey,
}

impl OdkPrivateKey {
    /// Parses a PEM private key: `BEGIN PRIVATE KEY` (unencrypted PKCS#8) or
    /// `BEGIN RSA PRIVATE KEY` (PKCS#1, as `openssl genrsa` and ODK Central's test key).
    /// Encrypted PEM (`ENCRYPTED PRIVATE KEY`, `Proc-Type: 4,ENCRYPTED`) is refused here; see
    /// [`from_pem_with_passphrase`](Self::from_pem_with_passphrase).
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let (label, der) = pem_decode(pem)?;
        let der = Zeroizing::new(der);
        match label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "RSA PRIVATE KEY" => Self::from_pkcs1_der(&der),
            ENCRYPTED_PKCS8_LABEL => Err(CryptoError::InvalidKey(
                "the private key is passphrase-protected; a passphrase is needed",
            )),
            _ => Err(CryptoError::InvalidKey("not an RSA private key PEM block")),
        }
    }

    /// Parses a DER PKCS#8 `PrivateKeyInfo` holding an RSA key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let key = PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|_| CryptoError::InvalidKey("not an acceptable RSA PKCS#8 private key"))?;
        Self::from_decrypting_key(key)
    }

    /// Parses a DER PKCS#1 `RSAPrivateKey`.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, CryptoError> {
        let pair = KeyPair::from_der(der)
            .map_err(|_| CryptoError::InvalidKey("not an acceptable RSA PKCS#1 private key"))?;
        let pkcs8 = pair
            .as_der()
            .map_err(|_| CryptoError::InvalidKey("RSA private key could not be re-encoded"))?;
        Self::from_pkcs8_der(pkcs8.as_ref())
    }

    /// Recovers the private key from an ODK Central "managed encryption" key archive:
    /// `privkey` is the PKCS#8 PEM encrypted with AES-256-CBC/PKCS#7 under
    /// PBKDF2-HMAC-SHA256(passphrase, salt, 128 000 iterations). All inputs are base64 as stored
    /// by Central. A wrong passphrase fails as [`CryptoError::Decrypt`] (the archive has no MAC,
    /// so it shows up as bad padding or an unparseable key).
    pub fn from_managed_archive(
        privkey_b64: &str,
        salt_b64: &str,
        iv_b64: &str,
        passphrase: &SecretString,
    ) -> Result<Self, CryptoError> {
        use aws_lc_rs::cipher::{
            AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
        };
        use aws_lc_rs::iv::FixedLength;

        const ITERATIONS: u32 = 128_000;
        let bad = |_: base64::DecodeError| {
            CryptoError::Format("managed key archive field is not valid base64")
        };
        let salt = STANDARD.decode(salt_b64.trim()).map_err(bad)?;
        let iv: [u8; 16] = STANDARD
            .decode(iv_b64.trim())
            .map_err(bad)?
            .try_into()
            .map_err(|_| CryptoError::Format("managed key archive IV is not 16 bytes"))?;
        let mut data = Zeroizing::new(STANDARD.decode(privkey_b64.trim()).map_err(bad)?);

        let mut kek = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
            passphrase.expose().as_bytes(),
            &salt,
            ITERATIONS,
            kek.as_mut(),
        );
        let key = UnboundCipherKey::new(&AES_256, kek.as_ref())
            .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
            .map_err(|_| CryptoError::InvalidKey("could not set up the archive cipher"))?;
        let pem = key
            .decrypt(
                data.as_mut_slice(),
                DecryptionContext::Iv128(FixedLength::from(iv)),
            )
            .map_err(|_| CryptoError::Decrypt)?;
        let pem = std::str::from_utf8(pem).map_err(|_| CryptoError::Decrypt)?;
        Self::from_pem(pem).map_err(|_| CryptoError::Decrypt)
    }

    /// A fresh 2048-bit key pair (tests and tooling; forms normally bring their own key).
    pub fn generate() -> Result<Self, CryptoError> {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| CryptoError::InvalidKey("RSA key generation failed"))?;
        Self::from_decrypting_key(key)
    }

    /// Parses a PEM private key like [`from_pem`](Self::from_pem), and also opens a
    /// passphrase-encrypted PKCS#8 key (`BEGIN ENCRYPTED PRIVATE KEY`, PBES2 with PBKDF2 or
    /// scrypt and AES-CBC). A wrong passphrase (or a damaged file) fails as
    /// [`CryptoError::Decrypt`]. Unencrypted keys open whatever the passphrase.
    pub fn from_pem_with_passphrase(
        pem: &str,
        passphrase: &SecretString,
    ) -> Result<Self, CryptoError> {
        let (label, der) = pem_decode(pem)?;
        let der = Zeroizing::new(der);
        if label != ENCRYPTED_PKCS8_LABEL {
            return Self::from_pem(pem);
        }
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|_| CryptoError::InvalidKey("malformed encrypted PKCS#8 private key"))?;
        let doc = info
            .decrypt(passphrase.expose().as_bytes())
            .map_err(|e| match e {
                pkcs8::Error::EncryptedPrivateKey(
                    pkcs8::pkcs5::Error::UnsupportedAlgorithm { .. }
                    | pkcs8::pkcs5::Error::AlgorithmParametersInvalid { .. }
                    | pkcs8::pkcs5::Error::NoPbes1CryptSupport,
                ) => CryptoError::InvalidKey("unsupported private key encryption algorithm"),
                _ => CryptoError::Decrypt,
            })?;
        Self::from_pkcs8_der(doc.as_bytes()).map_err(|_| CryptoError::Decrypt)
    }

    /// Generates an RSA key pair of `bits` (2048, 3072 or 4096) and returns it as PKCS#8 PEM
    /// with its public key. With a passphrase the PEM is `ENCRYPTED PRIVATE KEY` (PBES2:
    /// PBKDF2-HMAC-SHA256, [`PKCS8_PBKDF2_ITERATIONS`] iterations, random 16-byte salt,
    /// AES-256-CBC), readable by OpenSSL and [`from_pem_with_passphrase`](Self::from_pem_with_passphrase);
    /// without one it is a plain `PRIVATE KEY`.
    pub fn generate_pem(
        bits: usize,
        passphrase: Option<&SecretString>,
    ) -> Result<(Zeroizing<String>, OdkPublicKey), CryptoError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => {
                return Err(CryptoError::InvalidKey(
                    "RSA key size must be 2048, 3072 or 4096 bits",
                ));
            }
        };
        let key = PrivateDecryptingKey::generate(size)
            .map_err(|_| CryptoError::InvalidKey("RSA key generation failed"))?;
        let public = OdkPublicKey::from_encrypting_key(key.public_key())?;
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(&key)
            .map_err(|_| CryptoError::InvalidKey("RSA private key could not be encoded"))?;
        let encode_failed = |_| CryptoError::InvalidKey("RSA private key could not be encoded");
        let pem = match passphrase {
            None => pkcs8::SecretDocument::try_from(der.as_ref())
                .map_err(encode_failed)?
                .to_pem("PRIVATE KEY", pkcs8::LineEnding::LF)
                .map_err(encode_failed)?,
            Some(pass) => {
                if pass.expose().is_empty() {
                    return Err(CryptoError::InvalidKey("the passphrase is empty"));
                }
                let salt: [u8; 16] = crate::random::bytes()?;
                let iv: [u8; 16] = crate::random::bytes()?;
                let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(
                    PKCS8_PBKDF2_ITERATIONS,
                    &salt,
                    &iv,
                )
                .map_err(|_| CryptoError::InvalidKey("bad key encryption parameters"))?;
                let info = pkcs8::PrivateKeyInfo::try_from(der.as_ref())
                    .map_err(|_| CryptoError::InvalidKey("RSA private key could not be encoded"))?;
                info.encrypt_with_params(params, pass.expose().as_bytes())
                    .map_err(|_| CryptoError::InvalidKey("private key encryption failed"))?
                    .to_pem(ENCRYPTED_PKCS8_LABEL, pkcs8::LineEnding::LF)
                    .map_err(encode_failed)?
            }
        };
        Ok((pem, public))
    }

    /// The matching public key.
    pub fn public_key(&self) -> &OdkPublicKey {
        &self.public
    }

    /// Modulus length in bytes (= length of every OAEP ciphertext).
    pub fn size_bytes(&self) -> usize {
        self.oaep.key_size_bytes()
    }

    fn from_decrypting_key(key: PrivateDecryptingKey) -> Result<Self, CryptoError> {
        let public = OdkPublicKey::from_encrypting_key(key.public_key())?;
        let oaep = OaepPrivateDecryptingKey::new(key)
            .map_err(|_| CryptoError::InvalidKey("RSA key unusable for OAEP"))?;
        Ok(Self { oaep, public })
    }

    /// OAEP-SHA256/MGF1-SHA256 decryption of a base64 block; every failure is `Decrypt`
    /// except malformed base64 / wrong block length (`Format`).
    fn oaep_decrypt_b64(&self, b64: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let ct = STANDARD
            .decode(strip_ascii_whitespace(b64))
            .map_err(|_| CryptoError::Format("RSA block is not valid base64"))?;
        if ct.len() != self.oaep.key_size_bytes() {
            return Err(CryptoError::Format(
                "RSA block length does not match the key",
            ));
        }
        let mut out = Zeroizing::new(vec![0u8; self.oaep.min_output_size()]);
        let n = self
            .oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, &ct, out.as_mut_slice(), None)
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        out.truncate(n);
        Ok(out)
    }
}

impl fmt::Debug for OdkPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OdkPrivateKey(RSA-{}, [redacted])",
            self.oaep.key_size_bits()
        )
    }
}

/// A form's RSA public key, as carried in `<submission base64RsaPublicKey="…">`.
pub struct OdkPublicKey {
    oaep: OaepPublicEncryptingKey,
    spki_der: Vec<u8>,
}

impl OdkPublicKey {
    /// Parses base64 (standard alphabet) of a DER `SubjectPublicKeyInfo`: the form attribute's
    /// value, i.e. the body of a `BEGIN PUBLIC KEY` PEM. Whitespace is ignored.
    pub fn from_base64_spki(b64: &str) -> Result<Self, CryptoError> {
        let der = STANDARD
            .decode(strip_ascii_whitespace(b64))
            .map_err(|_| CryptoError::InvalidKey("public key is not valid base64"))?;
        Self::from_spki_der(&der)
    }

    /// Parses a DER `SubjectPublicKeyInfo`.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        let key = PublicEncryptingKey::from_der(der)
            .map_err(|_| CryptoError::InvalidKey("not an acceptable RSA public key"))?;
        Self::from_encrypting_key(key)
    }

    /// Parses a `BEGIN PUBLIC KEY` PEM block (SPKI). PKCS#1 `BEGIN RSA PUBLIC KEY` is refused,
    /// as forms cannot carry it.
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        match pem_decode(pem)? {
            (label, der) if label == "PUBLIC KEY" => Self::from_spki_der(&der),
            _ => Err(CryptoError::InvalidKey("not a PUBLIC KEY (SPKI) PEM block")),
        }
    }

    /// Base64 of the DER SPKI, the exact form of `base64RsaPublicKey`.
    pub fn to_base64_spki(&self) -> String {
        STANDARD.encode(&self.spki_der)
    }

    /// Modulus length in bytes.
    pub fn size_bytes(&self) -> usize {
        self.oaep.key_size_bytes()
    }

    fn from_encrypting_key(key: PublicEncryptingKey) -> Result<Self, CryptoError> {
        let spki_der = key
            .as_der()
            .map_err(|_| CryptoError::InvalidKey("public key could not be encoded"))?
            .as_ref()
            .to_vec();
        let bits = key.key_size_bits();
        if !(2048..=8192).contains(&bits) {
            return Err(CryptoError::InvalidKey("RSA key must be 2048 to 8192 bits"));
        }
        let oaep = OaepPublicEncryptingKey::new(key)
            .map_err(|_| CryptoError::InvalidKey("RSA key unusable for OAEP"))?;
        Ok(Self { oaep, spki_der })
    }

    /// OAEP-SHA256/MGF1-SHA256 encryption, base64 without line breaks.
    fn oaep_encrypt_b64(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        let mut out = vec![0u8; self.oaep.ciphertext_size()];
        let ct = self
            .oaep
            .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
            .map_err(|_| CryptoError::InvalidKey("RSA-OAEP encryption failed"))?;
        Ok(STANDARD.encode(ct))
    }
}

impl fmt::Debug for OdkPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OdkPublicKey(RSA-{})", self.oaep.key_size_bits())
    }
}

impl PartialEq for OdkPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}

impl Eq for OdkPublicKey {}

fn strip_ascii_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

/// The first PEM block of `pem`: its label and decoded body. Refuses RFC 1421 encrypted PEM.
fn pem_decode(pem: &str) -> Result<(String, Vec<u8>), CryptoError> {
    let bad = || CryptoError::InvalidKey("malformed PEM");
    let mut lines = pem.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| {
            l.strip_prefix("-----BEGIN ")
                .and_then(|r| r.strip_suffix("-----"))
        })
        .ok_or_else(bad)?
        .to_owned();
    let end = format!("-----END {label}-----");
    let mut body = Zeroizing::new(String::new());
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        if line.contains(':') {
            if line.starts_with("Proc-Type") && line.contains("ENCRYPTED") {
                return Err(CryptoError::InvalidKey(
                    "encrypted PEM private keys are not supported; decrypt the key first",
                ));
            }
            continue; // other RFC 1421 headers
        }
        body.push_str(line);
    }
    if !ended {
        return Err(bad());
    }
    let der = STANDARD.decode(body.as_bytes()).map_err(|_| bad())?;
    Ok((label, der))
}

// ---------------------------------------------------------------------------------------------
// Key wrap
// ---------------------------------------------------------------------------------------------

/// Unwraps `base64EncryptedKey` (RSA-OAEP SHA-256/MGF1-SHA-256) to the submission's AES key.
/// A wrong private key, a corrupted block or a payload other than 32 bytes is
/// [`CryptoError::Decrypt`].
pub fn unwrap_key(
    private: &OdkPrivateKey,
    base64_encrypted_key: &str,
) -> Result<Key256, CryptoError> {
    let raw = private.oaep_decrypt_b64(base64_encrypted_key)?;
    Key256::from_slice(&raw).map_err(|_| CryptoError::Decrypt)
}

/// Wraps an AES key for the manifest's `base64EncryptedKey`.
pub fn wrap_key(public: &OdkPublicKey, key: &Key256) -> Result<String, CryptoError> {
    public.oaep_encrypt_b64(key.expose())
}

// ---------------------------------------------------------------------------------------------
// IVs
// ---------------------------------------------------------------------------------------------

/// The per-file IV counter: `seed = MD5(UTF-8(instanceID) ‖ K)`; before each file, byte
/// `counter mod 16` of the seed is incremented (wrapping) and the current seed is the IV.
/// The seed is never reset, so IVs accumulate.
#[derive(Clone)]
pub struct IvSequence {
    seed: [u8; 16],
    counter: usize,
}

impl IvSequence {
    /// Starts the sequence for one submission.
    pub fn new(instance_id: &str, key: &Key256) -> Self {
        let mut h = Md5::new();
        h.update(instance_id.as_bytes());
        h.update(key.expose());
        Self {
            seed: h.finalize().into(),
            counter: 0,
        }
    }

    /// The IV for the next file (the first call gives file index 0).
    pub fn next_iv(&mut self) -> [u8; 16] {
        let i = self.counter % 16;
        self.seed[i] = self.seed[i].wrapping_add(1);
        self.counter += 1;
        self.seed
    }
}

impl fmt::Debug for IvSequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IvSequence(counter: {}, [redacted])", self.counter)
    }
}

impl Drop for IvSequence {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

/// The IV of the file at `index` (0-based, encryption order: media in manifest order, then the
/// XML at index = number of media files).
pub fn file_iv(instance_id: &str, key: &Key256, index: usize) -> [u8; 16] {
    let mut seq = IvSequence::new(instance_id, key);
    let mut iv = seq.next_iv();
    for _ in 0..index {
        iv = seq.next_iv();
    }
    iv
}

// ---------------------------------------------------------------------------------------------
// File cipher
// ---------------------------------------------------------------------------------------------

/// Encrypts one file: AES-256-CFB128 of the PKCS#7-padded plaintext (1–16 pad bytes, so the
/// output is `16·(⌊n/16⌋+1)` bytes).
pub fn encrypt_file(key: &Key256, iv: [u8; 16], plaintext: &[u8]) -> Vec<u8> {
    let pad = BLOCK - plaintext.len() % BLOCK;
    let mut buf = Vec::with_capacity(plaintext.len() + pad);
    buf.extend_from_slice(plaintext);
    buf.resize(plaintext.len() + pad, pad as u8);
    cfb_mode::Encryptor::<Aes256>::new(key.expose().into(), &iv.into()).encrypt(&mut buf);
    buf
}

/// Decrypts one file and checks and strips its PKCS#7 padding.
///
/// A length that is not a non-zero multiple of 16 is [`CryptoError::Truncated`]; bad padding
/// (wrong key, wrong IV/index, altered last block) is [`CryptoError::Decrypt`]. CFB has no
/// integrity: alterations before the last block are not detected here (see the signature).
pub fn decrypt_file(key: &Key256, iv: [u8; 16], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut d = Decryptor::new(key, iv);
    let mut out = d.update(ciphertext);
    out.extend_from_slice(&d.finish()?);
    Ok(out)
}

/// Streaming decryption of one file: feed ciphertext to [`update`](Self::update) in chunks of
/// any size, then [`finish`](Self::finish) checks the padding. The last 16 bytes are held back
/// until `finish`, so output never includes padding.
pub struct Decryptor {
    cfb: cfb_mode::BufDecryptor<Aes256>,
    tail: Zeroizing<Vec<u8>>,
    total: u64,
}

impl Decryptor {
    /// Starts decrypting one file.
    pub fn new(key: &Key256, iv: [u8; 16]) -> Self {
        Self {
            cfb: cfb_mode::BufDecryptor::<Aes256>::new(key.expose().into(), &iv.into()),
            tail: Zeroizing::new(Vec::with_capacity(2 * BLOCK)),
            total: 0,
        }
    }

    /// Decrypts a chunk; returns the plaintext that is certainly not padding.
    pub fn update(&mut self, ciphertext: &[u8]) -> Vec<u8> {
        self.total += ciphertext.len() as u64;
        let mut buf = ciphertext.to_vec();
        self.cfb.decrypt(&mut buf);
        self.tail.extend_from_slice(&buf);
        buf.zeroize();
        if self.tail.len() > BLOCK {
            let keep_from = self.tail.len() - BLOCK;
            self.tail.drain(..keep_from).collect()
        } else {
            Vec::new()
        }
    }

    /// Ends the file: checks the length and the PKCS#7 padding, returns the last plaintext bytes.
    pub fn finish(self) -> Result<Vec<u8>, CryptoError> {
        if self.total == 0 || !self.total.is_multiple_of(BLOCK as u64) {
            return Err(CryptoError::Truncated);
        }
        let last = &self.tail[..];
        let pad = usize::from(last[BLOCK - 1]);
        // Constant-time over the block: the pad value must be 1..=16 and the last `pad` bytes
        // must all equal it.
        let mut ok = subtle::Choice::from(u8::from((1..=BLOCK).contains(&pad)));
        for (i, b) in last.iter().enumerate() {
            let in_pad = subtle::Choice::from(u8::from(i >= BLOCK.saturating_sub(pad)));
            ok &= !in_pad | b.ct_eq(&(pad as u8));
        }
        if !bool::from(ok) {
            return Err(CryptoError::Decrypt);
        }
        Ok(last[..BLOCK - pad].to_vec())
    }
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decryptor(bytes_in: {}, [redacted])", self.total)
    }
}

// ---------------------------------------------------------------------------------------------
// Signature
// ---------------------------------------------------------------------------------------------

/// The fields covered by `base64EncryptedElementSignature` (Collect's construction, checked by
/// Briefcase). `files` are `(encrypted file name, plaintext)` in encryption order: media in
/// manifest order, then the XML (`submission.xml.enc`) last. A trailing `.enc` is dropped from
/// each name.
#[derive(Clone, Copy)]
pub struct SignatureSource<'a> {
    /// Form id (manifest root `id`).
    pub form_id: &'a str,
    /// Form version; its line is present only when this is non-blank.
    pub version: Option<&'a str>,
    /// The manifest's `base64EncryptedKey` text, verbatim.
    pub base64_encrypted_key: &'a str,
    /// `meta/instanceID`.
    pub instance_id: &'a str,
    /// `(encrypted name, plaintext bytes)`, media first, XML last.
    pub files: &'a [(&'a str, &'a [u8])],
}

impl SignatureSource<'_> {
    /// The exact UTF-8 string that is hashed (each line ends with `\n`). Contains MD5s of the
    /// plaintexts, so treat it as sensitive.
    pub fn to_source_string(&self) -> String {
        let md5s: Vec<(&str, [u8; 16])> = self
            .files
            .iter()
            .map(|(name, bytes)| (*name, Md5::digest(bytes).into()))
            .collect();
        self.with_digests(&md5s).to_source_string()
    }

    /// The same fields with each file reduced to the MD5 of its plaintext.
    fn with_digests<'b>(&'b self, md5s: &'b [(&'b str, [u8; 16])]) -> SignatureDigests<'b> {
        SignatureDigests {
            form_id: self.form_id,
            version: self.version,
            base64_encrypted_key: self.base64_encrypted_key,
            instance_id: self.instance_id,
            files: md5s,
        }
    }

    /// `MD5(source string)`, the 16 bytes that get OAEP-encrypted.
    pub fn digest(&self) -> [u8; 16] {
        Md5::digest(self.to_source_string().as_bytes()).into()
    }

    /// `base64EncryptedElementSignature` for these fields.
    pub fn sign(&self, public: &OdkPublicKey) -> Result<String, CryptoError> {
        public.oaep_encrypt_b64(&self.digest())
    }
}

impl fmt::Debug for SignatureSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureSource")
            .field("form_id", &self.form_id)
            .field("version", &self.version)
            .field("instance_id", &self.instance_id)
            .field(
                "files",
                &self.files.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// [`SignatureSource`] for streaming readers: each file is given by the MD5 of its plaintext,
/// computed while the file was decrypted, so no file has to be held in memory.
#[derive(Clone, Copy)]
pub struct SignatureDigests<'a> {
    /// Form id (manifest root `id`).
    pub form_id: &'a str,
    /// Form version; its line is present only when this is non-blank.
    pub version: Option<&'a str>,
    /// The manifest's `base64EncryptedKey` text, verbatim.
    pub base64_encrypted_key: &'a str,
    /// `meta/instanceID`.
    pub instance_id: &'a str,
    /// `(encrypted name, MD5 of the plaintext)`, media first, XML last.
    pub files: &'a [(&'a str, [u8; 16])],
}

impl SignatureDigests<'_> {
    /// The exact UTF-8 string that is hashed (each line ends with `\n`).
    pub fn to_source_string(&self) -> String {
        let mut s = String::new();
        s.push_str(self.form_id);
        s.push('\n');
        if let Some(v) = self.version.filter(|v| !v.trim().is_empty()) {
            s.push_str(v);
            s.push('\n');
        }
        s.push_str(self.base64_encrypted_key);
        s.push('\n');
        s.push_str(self.instance_id);
        s.push('\n');
        for (name, md5) in self.files {
            let name = name.strip_suffix(".enc").unwrap_or(name);
            s.push_str(name);
            s.push_str("::");
            s.push_str(&to_hex(md5));
            s.push('\n');
        }
        s
    }

    /// `MD5(source string)`.
    pub fn digest(&self) -> [u8; 16] {
        Md5::digest(self.to_source_string().as_bytes()).into()
    }
}

impl fmt::Debug for SignatureDigests<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureDigests")
            .field("form_id", &self.form_id)
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// Whether `base64_signature` matches `fields` (constant-time comparison).
pub fn verify_signature_digests(
    private: &OdkPrivateKey,
    fields: &SignatureDigests<'_>,
    base64_signature: &str,
) -> bool {
    match decrypt_signature(private, base64_signature) {
        Ok(digest) => bool::from(digest.ct_eq(&fields.digest())),
        Err(_) => false,
    }
}

/// RSA-decrypts `base64EncryptedElementSignature` to its 16-byte digest.
pub fn decrypt_signature(
    private: &OdkPrivateKey,
    base64_signature: &str,
) -> Result<[u8; 16], CryptoError> {
    let raw = private.oaep_decrypt_b64(base64_signature)?;
    raw.as_slice().try_into().map_err(|_| CryptoError::Decrypt)
}

/// Whether `base64_signature` matches `source` (constant-time comparison). `false` when the
/// signature cannot be decrypted at all.
pub fn verify_signature(
    private: &OdkPrivateKey,
    source: &SignatureSource<'_>,
    base64_signature: &str,
) -> bool {
    match decrypt_signature(private, base64_signature) {
        Ok(digest) => bool::from(digest.ct_eq(&source.digest())),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------------------------

/// The submission manifest (`submission.xml` of an encrypted submission), parsed by local
/// names so every producer's namespaces are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Root `id`.
    pub form_id: String,
    /// Root `version`, when present.
    pub version: Option<String>,
    /// `base64EncryptedKey` text.
    pub base64_encrypted_key: String,
    /// `meta/instanceID`, trimmed.
    pub instance_id: String,
    /// `media/file` names (with `.enc`), in manifest order = encryption order.
    pub media: Vec<String>,
    /// `encryptedXmlFile` (normally `submission.xml.enc`).
    pub encrypted_xml_file: String,
    /// `base64EncryptedElementSignature`, when present.
    pub signature: Option<String>,
}

impl Manifest {
    /// Parses a manifest. Requires root `data` with `id`, `encrypted="yes"` or a
    /// `base64EncryptedKey`, a `meta/instanceID` and an `encryptedXmlFile`.
    pub fn parse(xml: &str) -> Result<Self, CryptoError> {
        use quick_xml::XmlVersion;
        use quick_xml::events::Event;

        const MAX_MEDIA: usize = 10_000;
        let bad = |m: &'static str| CryptoError::Format(m);
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut path: Vec<String> = Vec::new();
        let mut text = String::new();
        let mut form_id = None;
        let mut version = None;
        let mut key = None;
        let mut instance_id = None;
        let mut media = Vec::new();
        let mut xml_file = None;
        let mut signature = None;

        loop {
            let ev = reader
                .read_event()
                .map_err(|_| bad("manifest is not well-formed XML"))?;
            match ev {
                Event::Start(e) => {
                    let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                    if path.is_empty() {
                        if local != "data" {
                            return Err(bad("manifest root is not <data>"));
                        }
                        for attr in e.attributes() {
                            let attr = attr.map_err(|_| bad("manifest attribute is malformed"))?;
                            let value = attr
                                .normalized_value(XmlVersion::Implicit1_0)
                                .map_err(|_| bad("manifest attribute is malformed"))?
                                .into_owned();
                            match attr.key.local_name().as_ref() {
                                b"id" => form_id = Some(value),
                                b"version" => version = Some(value),
                                _ => {}
                            }
                        }
                    }
                    text.clear();
                    path.push(local);
                }
                Event::Empty(_) if path.is_empty() => {
                    return Err(bad("manifest root is empty"));
                }
                Event::End(_) => {
                    let p: Vec<&str> = path.iter().map(String::as_str).collect();
                    let value = std::mem::take(&mut text);
                    match p.as_slice() {
                        ["data", "base64EncryptedKey"] => key = Some(value.trim().to_owned()),
                        ["data", "meta", "instanceID"] => {
                            instance_id = Some(value.trim().to_owned());
                        }
                        ["data", "media", "file"] => {
                            if media.len() >= MAX_MEDIA {
                                return Err(CryptoError::Limit("too many media files in manifest"));
                            }
                            media.push(value.trim().to_owned());
                        }
                        ["data", "encryptedXmlFile"] => xml_file = Some(value.trim().to_owned()),
                        ["data", "base64EncryptedElementSignature"] => {
                            signature = Some(value.trim().to_owned());
                        }
                        _ => {}
                    }
                    path.pop();
                }
                Event::Text(t) => {
                    let s = t
                        .xml10_content()
                        .map_err(|_| bad("manifest text is not UTF-8"))?;
                    text.push_str(&s);
                }
                Event::CData(t) => {
                    let s = t.decode().map_err(|_| bad("manifest text is not UTF-8"))?;
                    text.push_str(&s);
                }
                Event::GeneralRef(r) => {
                    if let Some(c) = r
                        .resolve_char_ref()
                        .map_err(|_| bad("manifest has a bad character reference"))?
                    {
                        text.push(c);
                    } else {
                        let name = r.decode().map_err(|_| bad("manifest text is not UTF-8"))?;
                        let v = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| bad("manifest uses an unknown entity"))?;
                        text.push_str(v);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }

        let key = key.ok_or_else(|| bad("manifest has no base64EncryptedKey"))?;
        // `encrypted="yes"` is not required: a base64EncryptedKey element suffices (spec §7.1).
        Ok(Self {
            form_id: form_id
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("manifest has no form id"))?,
            version,
            base64_encrypted_key: key,
            instance_id: instance_id
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("manifest has no meta/instanceID"))?,
            media,
            encrypted_xml_file: xml_file
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("manifest has no encryptedXmlFile"))?,
            signature,
        })
    }

    /// The manifest as ODK Collect writes it (root namespace [`COLLECT_MANIFEST_NS`],
    /// `orx:meta`, one `<media>` per file).
    pub fn to_xml(&self) -> String {
        use quick_xml::escape::escape;
        let mut s = String::new();
        s.push_str("<data id=\"");
        s.push_str(&escape(self.form_id.as_str()));
        s.push('"');
        if let Some(v) = &self.version {
            s.push_str(" version=\"");
            s.push_str(&escape(v.as_str()));
            s.push('"');
        }
        s.push_str(" encrypted=\"yes\" xmlns=\"");
        s.push_str(COLLECT_MANIFEST_NS);
        s.push_str("\">\n  <base64EncryptedKey>");
        s.push_str(&escape(self.base64_encrypted_key.as_str()));
        s.push_str("</base64EncryptedKey>\n  <orx:meta xmlns:orx=\"");
        s.push_str(OPENROSA_NS);
        s.push_str("\"><orx:instanceID>");
        s.push_str(&escape(self.instance_id.as_str()));
        s.push_str("</orx:instanceID></orx:meta>\n");
        for m in &self.media {
            s.push_str("  <media><file>");
            s.push_str(&escape(m.as_str()));
            s.push_str("</file></media>\n");
        }
        s.push_str("  <encryptedXmlFile>");
        s.push_str(&escape(self.encrypted_xml_file.as_str()));
        s.push_str("</encryptedXmlFile>\n");
        if let Some(sig) = &self.signature {
            s.push_str("  <base64EncryptedElementSignature>");
            s.push_str(&escape(sig.as_str()));
            s.push_str("</base64EncryptedElementSignature>\n");
        }
        s.push_str("</data>\n");
        s
    }

    /// All encrypted file names in encryption order (media, then the XML); a file's position
    /// here is its IV index.
    pub fn files_in_order(&self) -> impl Iterator<Item = &str> {
        self.media
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.encrypted_xml_file.as_str()))
    }
}

// ---------------------------------------------------------------------------------------------
// Whole submissions
// ---------------------------------------------------------------------------------------------

/// What [`encrypt_submission`] produces: the manifest to post as `xml_submission_file` and the
/// `.enc` parts (media in manifest order, then `submission.xml.enc`).
#[derive(Clone)]
pub struct EncryptedSubmission {
    /// The manifest XML.
    pub manifest_xml: String,
    /// `(name.enc, ciphertext)` in encryption order.
    pub files: Vec<(String, Vec<u8>)>,
}

impl fmt::Debug for EncryptedSubmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedSubmission")
            .field("manifest_len", &self.manifest_xml.len())
            .field(
                "files",
                &self
                    .files
                    .iter()
                    .map(|(n, b)| (n.as_str(), b.len()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Encrypts a submission exactly as ODK Collect does, with a fresh random AES key.
/// `attachments` are `(file name, bytes)`; their order is the manifest (and IV) order.
pub fn encrypt_submission(
    public: &OdkPublicKey,
    form_id: &str,
    version: Option<&str>,
    instance_id: &str,
    xml: &[u8],
    attachments: &[(&str, &[u8])],
) -> Result<EncryptedSubmission, CryptoError> {
    let key = Key256::generate()?;
    encrypt_submission_with_key(
        public,
        &key,
        form_id,
        version,
        instance_id,
        xml,
        attachments,
    )
}

/// [`encrypt_submission`] with a caller-chosen AES key, for reproducible test vectors.
/// Never reuse a key for two submissions.
pub fn encrypt_submission_with_key(
    public: &OdkPublicKey,
    key: &Key256,
    form_id: &str,
    version: Option<&str>,
    instance_id: &str,
    xml: &[u8],
    attachments: &[(&str, &[u8])],
) -> Result<EncryptedSubmission, CryptoError> {
    if form_id.is_empty() {
        return Err(CryptoError::Format("form id is required"));
    }
    if instance_id.trim().is_empty() {
        return Err(CryptoError::Format("instanceID is required"));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in attachments {
        if name.is_empty()
            || name.contains(['/', '\\'])
            || *name == "submission.xml"
            || name.starts_with('.')
        {
            return Err(CryptoError::Format("invalid attachment name"));
        }
        if !seen.insert(*name) {
            return Err(CryptoError::Format("duplicate attachment name"));
        }
    }
    let version = version.filter(|v| !v.trim().is_empty());
    let base64_encrypted_key = wrap_key(public, key)?;
    let mut ivs = IvSequence::new(instance_id, key);
    let mut files = Vec::with_capacity(attachments.len() + 1);
    let mut names = Vec::with_capacity(attachments.len() + 1);
    for (name, bytes) in attachments {
        let enc = format!("{name}.enc");
        files.push((enc.clone(), encrypt_file(key, ivs.next_iv(), bytes)));
        names.push(enc);
    }
    files.push((
        SUBMISSION_XML_ENC.to_owned(),
        encrypt_file(key, ivs.next_iv(), xml),
    ));
    names.push(SUBMISSION_XML_ENC.to_owned());

    let signed: Vec<(&str, &[u8])> = names
        .iter()
        .map(String::as_str)
        .zip(
            attachments
                .iter()
                .map(|(_, b)| *b)
                .chain(std::iter::once(xml)),
        )
        .collect();
    let signature = SignatureSource {
        form_id,
        version,
        base64_encrypted_key: &base64_encrypted_key,
        instance_id,
        files: &signed,
    }
    .sign(public)?;

    let manifest = Manifest {
        form_id: form_id.to_owned(),
        version: version.map(str::to_owned),
        base64_encrypted_key,
        instance_id: instance_id.to_owned(),
        media: names[..names.len() - 1].to_vec(),
        encrypted_xml_file: SUBMISSION_XML_ENC.to_owned(),
        signature: Some(signature),
    };
    Ok(EncryptedSubmission {
        manifest_xml: manifest.to_xml(),
        files,
    })
}

/// The outcome of [`decrypt_submission`].
#[derive(Clone)]
pub struct DecryptedSubmission {
    /// Media as `(name without .enc, plaintext)` in manifest order; `None` when the part was
    /// not supplied (later files still decrypt: the IV index advances regardless).
    pub media: Vec<(String, Option<Vec<u8>>)>,
    /// The decrypted instance XML.
    pub xml: Vec<u8>,
    /// `Some(true/false)` when the manifest has a signature and every media file was present;
    /// `None` when it could not be checked.
    pub signature_valid: Option<bool>,
}

impl fmt::Debug for DecryptedSubmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptedSubmission")
            .field(
                "media",
                &self
                    .media
                    .iter()
                    .map(|(n, b)| (n.as_str(), b.as_ref().map(Vec::len)))
                    .collect::<Vec<_>>(),
            )
            .field("xml_len", &self.xml.len())
            .field("signature_valid", &self.signature_valid)
            .finish()
    }
}

/// Decrypts a whole submission. `file` returns the ciphertext of an encrypted part by name.
/// The instance XML is required; a missing media part is reported as `None`.
pub fn decrypt_submission<'f>(
    private: &OdkPrivateKey,
    manifest: &Manifest,
    mut file: impl FnMut(&str) -> Option<&'f [u8]>,
) -> Result<DecryptedSubmission, CryptoError> {
    let key = unwrap_key(private, &manifest.base64_encrypted_key)?;
    let mut ivs = IvSequence::new(&manifest.instance_id, &key);
    let mut media = Vec::with_capacity(manifest.media.len());
    for name in &manifest.media {
        let iv = ivs.next_iv();
        let plain = file(name)
            .map(|ct| decrypt_file(&key, iv, ct))
            .transpose()?;
        let out = name.strip_suffix(".enc").unwrap_or(name).to_owned();
        media.push((out, plain));
    }
    let iv = ivs.next_iv();
    let ct = file(&manifest.encrypted_xml_file)
        .ok_or(CryptoError::Format("encrypted submission XML is missing"))?;
    let xml = decrypt_file(&key, iv, ct)?;

    let signature_valid = match &manifest.signature {
        Some(sig) if media.iter().all(|(_, b)| b.is_some()) => {
            let files: Vec<(&str, &[u8])> = manifest
                .files_in_order()
                .zip(
                    media
                        .iter()
                        .filter_map(|(_, b)| b.as_deref())
                        .chain(std::iter::once(xml.as_slice())),
                )
                .collect();
            let source = SignatureSource {
                form_id: &manifest.form_id,
                version: manifest.version.as_deref(),
                base64_encrypted_key: &manifest.base64_encrypted_key,
                instance_id: &manifest.instance_id,
                files: &files,
            };
            Some(verify_signature(private, &source, sig))
        }
        _ => None,
    };
    Ok(DecryptedSubmission {
        media,
        xml,
        signature_valid,
    })
}

#[cfg(test)]
mod tests;
