//! Vectors from ODK Central's test suite (see `testdata/odk/README.md`) and round trips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/odk");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DATA}/{name}")).unwrap()
}

fn read_str(name: &str) -> String {
    String::from_utf8(read(name)).unwrap()
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&read(name)).unwrap()
}

fn s(v: &serde_json::Value) -> &str {
    v.as_str().unwrap()
}

fn hex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn b64(v: &str) -> Vec<u8> {
    STANDARD.decode(v.trim()).unwrap()
}

fn key_b64(v: &str) -> Key256 {
    Key256::from_slice(&b64(v)).unwrap()
}

fn collect_private() -> OdkPrivateKey {
    OdkPrivateKey::from_pem(&read_str("collect-rsa2048-private.pem")).unwrap()
}

fn managed_private() -> OdkPrivateKey {
    let a = json("managed-roundtrip-generated/managed-key-archive.json");
    OdkPrivateKey::from_managed_archive(
        s(&a["privkey"]),
        s(&a["salt"]),
        s(&a["iv"]),
        &SecretString::from("correct horse battery"),
    )
    .unwrap()
}

// --- keys -------------------------------------------------------------------------------------

#[test]
fn odk_keys_parse_pkcs1_pem_spki_pem_and_form_attribute() {
    let private = collect_private();
    assert_eq!(private.size_bytes(), 256);
    let from_pem = OdkPublicKey::from_pem(&read_str("collect-rsa2048-public.pem")).unwrap();
    assert_eq!(private.public_key(), &from_pem);

    // The form carries the same key as base64 DER SPKI.
    let form = read_str("encrypted-form.xml");
    let attr = form.split("base64RsaPublicKey=\"").nth(1).unwrap();
    let attr = &attr[..attr.find('"').unwrap()];
    let from_form = OdkPublicKey::from_base64_spki(attr).unwrap();
    assert_eq!(from_form, from_pem);
    assert_eq!(from_form.to_base64_spki(), strip_ascii_whitespace(attr));

    // PKCS#8 PEM of the same key works too.
    let der = STANDARD
        .decode(
            read_str("collect-rsa2048-private.pem")
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let pkcs8 = KeyPair::from_der(&der).unwrap().as_der().unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    assert_eq!(
        OdkPrivateKey::from_pem(&pem).unwrap().public_key(),
        &from_pem
    );
}

#[test]
fn odk_keys_reject_garbage_and_never_print_material() {
    assert!(OdkPrivateKey::from_pem("nothing here").is_err());
    assert!(OdkPrivateKey::from_pem(&read_str("collect-rsa2048-public.pem")).is_err());
    assert!(
        OdkPrivateKey::from_pem(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        )
        .is_err()
    );
    assert!(OdkPublicKey::from_base64_spki("not base64!").is_err());
    assert!(OdkPublicKey::from_base64_spki("AAAA").is_err());

    let private = collect_private();
    let dbg = format!("{private:?}");
    assert_eq!(dbg, "OdkPrivateKey(RSA-2048, [redacted])");
    let pem = read_str("collect-rsa2048-private.pem");
    let body_line = pem.lines().nth(1).unwrap();
    assert!(!dbg.contains(&body_line[..16]));
    assert_eq!(
        format!("{:?}", private.public_key()),
        "OdkPublicKey(RSA-2048)"
    );
}

// --- key unwrap ---------------------------------------------------------------------------------

#[test]
fn odk_key_unwrap_vector() {
    let v = json("key-unwrap.json");
    let k = unwrap_key(&collect_private(), s(&v["encrypted_aes_key_b64"])).unwrap();
    assert_eq!(k.expose().as_slice(), b64(s(&v["aes_key_b64"])));
}

#[test]
fn odk_collect_manifests_unwrap_and_signature_digests() {
    let private = collect_private();
    let v = json("collect-1.22.4-vector.json");

    let two = Manifest::parse(&read_str("collect-1.22.4-manifest.xml")).unwrap();
    assert_eq!(two.form_id, "encrypted");
    assert_eq!(two.version.as_deref(), Some("working3"));
    assert_eq!(two.instance_id, s(&v["instance_id"]));
    assert_eq!(two.media, vec!["1561432532482.jpg.enc".to_owned()]);
    assert_eq!(two.encrypted_xml_file, SUBMISSION_XML_ENC);
    assert_eq!(two.base64_encrypted_key, s(&v["encrypted_aes_key_b64"]));
    assert_eq!(two.signature.as_deref(), Some(s(&v["signature_b64"])));
    let k = unwrap_key(&private, &two.base64_encrypted_key).unwrap();
    assert_eq!(k.expose().as_slice(), b64(s(&v["aes_key_b64"])));
    let digest = decrypt_signature(&private, two.signature.as_deref().unwrap()).unwrap();
    assert_eq!(digest.to_vec(), hex(s(&v["signature_decrypted_hex"])));

    let one = Manifest::parse(&read_str("collect-manifest-one-no-ciphertext.xml")).unwrap();
    let m1 = &v["manifest_one"];
    assert_eq!(one.instance_id, s(&m1["instance_id"]));
    let k = unwrap_key(&private, &one.base64_encrypted_key).unwrap();
    assert_eq!(k.expose().as_slice(), b64(s(&m1["aes_key_b64"])));
    let digest = decrypt_signature(&private, one.signature.as_deref().unwrap()).unwrap();
    assert_eq!(digest.to_vec(), hex(s(&m1["signature_decrypted_hex"])));
}

#[test]
fn odk_wrong_private_key_fails_cleanly() {
    let other = OdkPrivateKey::generate().unwrap();
    let v = json("collect-1.22.4-vector.json");
    assert_eq!(
        unwrap_key(&other, s(&v["encrypted_aes_key_b64"])).unwrap_err(),
        CryptoError::Decrypt
    );
    assert_eq!(
        decrypt_signature(&other, s(&v["signature_b64"])).unwrap_err(),
        CryptoError::Decrypt
    );
    let manifest = Manifest::parse(&read_str("collect-1.22.4-manifest.xml")).unwrap();
    let ct = read("collect-1.22.4-submission.xml.enc");
    let err = decrypt_submission(&other, &manifest, |_| Some(ct.as_slice())).unwrap_err();
    assert_eq!(err, CryptoError::Decrypt);
    // Malformed blocks are format errors, not panics.
    assert!(matches!(
        unwrap_key(&other, "AAAA"),
        Err(CryptoError::Format(_))
    ));
    assert!(matches!(
        unwrap_key(&other, "%%%"),
        Err(CryptoError::Format(_))
    ));
}

#[test]
fn odk_key_wrap_round_trip() {
    let private = OdkPrivateKey::generate().unwrap();
    let k = Key256::generate().unwrap();
    let wrapped = wrap_key(private.public_key(), &k).unwrap();
    assert_eq!(wrapped.len(), 344);
    assert_eq!(unwrap_key(&private, &wrapped).unwrap(), k);
    // A 16-byte payload (a signature digest) is not a key.
    let sig = private.public_key().oaep_encrypt_b64(&[7u8; 16]).unwrap();
    assert_eq!(
        unwrap_key(&private, &sig).unwrap_err(),
        CryptoError::Decrypt
    );
}

// --- IVs ------------------------------------------------------------------------------------------

#[test]
fn odk_iv_derivation_vector() {
    let v = json("iv-derivation.json");
    let id = s(&v["instance_id"]);
    let k = key_b64(s(&v["aes_key_b64"]));
    let ivs = v["ivs_hex_by_index"].as_object().unwrap();
    assert_eq!(ivs.len(), 6);
    let mut seq = IvSequence::new(id, &k);
    let all: Vec<[u8; 16]> = (0..32).map(|_| seq.next_iv()).collect();
    for (index, iv) in ivs {
        let index: usize = index.parse().unwrap();
        assert_eq!(file_iv(id, &k, index).to_vec(), hex(s(iv)), "index {index}");
        assert_eq!(all[index].to_vec(), hex(s(iv)), "sequence index {index}");
    }
    // The Collect vector's XML is blob index 1.
    let c = json("collect-1.22.4-vector.json");
    let k = key_b64(s(&c["aes_key_b64"]));
    assert_eq!(c["blob_index_of_submission_xml"], 1);
    assert_eq!(
        file_iv(s(&c["instance_id"]), &k, 1).to_vec(),
        hex(s(&c["iv_hex"]))
    );
}

#[test]
fn odk_iv_spec_vectors_enketo_and_utf8() {
    // Spec §10 vector 1 (Enketo's published values): IV#n is index n-1.
    let k = Key256::from_slice(&hex(
        "db641747c68b8894461aa744713308562a70789c213e84589752fff7eb7037a7",
    ))
    .unwrap();
    assert_eq!(
        file_iv("abcdefg", &k, 0).to_vec(),
        hex("1aa5f9b79d577412566419a41b70c0e6")
    );
    assert_eq!(
        file_iv("abcdefg", &k, 1).to_vec(),
        hex("1aa6f9b79d577412566419a41b70c0e6")
    );
    assert_eq!(
        file_iv("abcdefg", &k, 19).to_vec(),
        hex("1ba7fbb99e58751357651aa51c71c1e7")
    );
    assert_eq!(
        file_iv("abcdefgé", &k, 0).to_vec(),
        hex("0fd858d4c23b1d28b43f57398274f7af")
    );
    // Wrapping: 256 increments of byte 0 bring it back.
    let mut seq = IvSequence::new("abcdefg", &k);
    let first = seq.next_iv();
    for _ in 0..(16 * 256 - 1) {
        seq.next_iv();
    }
    let again = seq.next_iv();
    assert_eq!(again[0], first[0]);
}

// --- file cipher ---------------------------------------------------------------------------------

#[test]
fn odk_spec_aes_vector() {
    let k = Key256::from_bytes(core::array::from_fn(|i| i as u8));
    let id = "uuid:00000000-0000-4000-8000-000000000000";
    assert_eq!(
        file_iv(id, &k, 0).to_vec(),
        hex("af3b7ab17ea49c63dafdc084f446e4f6")
    );
    assert_eq!(
        file_iv(id, &k, 1).to_vec(),
        hex("af3c7ab17ea49c63dafdc084f446e4f6")
    );
    let ct = encrypt_file(&k, file_iv(id, &k, 0), b"hello world");
    assert_eq!(ct, hex("f76658be31fa7bbde46e65ae61d478fa"));
    assert_eq!(
        decrypt_file(&k, file_iv(id, &k, 0), &ct).unwrap(),
        b"hello world"
    );
}

#[test]
fn odk_collect_1_22_4_submission_decrypts_to_exact_plaintext() {
    let v = json("collect-1.22.4-vector.json");
    let ct = read("collect-1.22.4-submission.xml.enc");
    assert_eq!(ct, b64(&read_str("collect-1.22.4-submission.xml.enc.b64")));
    assert_eq!(ct.len() as u64, v["ciphertext_len"].as_u64().unwrap());
    assert_eq!(to_hex(&Md5::digest(&ct)), s(&v["ciphertext_md5_hex"]));
    let expected = read("collect-1.22.4-expected-plaintext.xml");
    assert_eq!(expected.len(), 331);

    // Low level: key, IV index 1, CFB + PKCS#7 (pad length 5).
    let k = unwrap_key(&collect_private(), s(&v["encrypted_aes_key_b64"])).unwrap();
    let iv = file_iv(s(&v["instance_id"]), &k, 1);
    let plain = decrypt_file(&k, iv, &ct).unwrap();
    assert_eq!(plain, expected);
    assert_eq!(
        ct.len() - plain.len(),
        v["pkcs7_pad_len"].as_u64().unwrap() as usize
    );
    use sha2::Digest as _;
    assert_eq!(
        to_hex(&sha2::Sha256::digest(&plain)),
        s(&v["plaintext_sha256_hex"])
    );
    // Re-encrypting gives Collect's exact bytes.
    assert_eq!(encrypt_file(&k, iv, &plain), ct);

    // Whole-submission path: the .jpg.enc was never published upstream, so that media is
    // missing, the XML still decrypts at index 1 and the signature cannot be checked.
    let manifest = Manifest::parse(&read_str("collect-1.22.4-manifest.xml")).unwrap();
    let out = decrypt_submission(&collect_private(), &manifest, |name| {
        (name == SUBMISSION_XML_ENC).then_some(ct.as_slice())
    })
    .unwrap();
    assert_eq!(out.xml, expected);
    assert_eq!(out.media, vec![("1561432532482.jpg".to_owned(), None)]);
    assert_eq!(out.signature_valid, None);
    // The decrypted XML names the same instance as the manifest.
    let xml = String::from_utf8(out.xml).unwrap();
    assert!(xml.contains(&format!(
        "<instanceID>{}</instanceID>",
        manifest.instance_id
    )));
}

#[test]
fn odk_collect_bad_padding_rejected() {
    let v = json("collect-1.22.4-vector.json");
    let k = key_b64(s(&v["aes_key_b64"]));
    let iv = hex(s(&v["iv_hex"])).try_into().unwrap();
    let bad = b64(&read_str("collect-1.22.4-bad-padding.b64"));
    assert!(decrypt_file(&k, iv, &bad).is_err());
    // What the vector is about: decrypted as a plain stream (as Central does), its last byte
    // is 62, not a PKCS#7 pad value.
    let mut raw = bad.clone();
    cfb_mode::Decryptor::<Aes256>::new(k.expose().into(), &iv.into()).decrypt(&mut raw);
    assert_eq!(
        u64::from(*raw.last().unwrap()),
        v["bad_padding_last_byte"].as_u64().unwrap()
    );
    // The same bad pad byte inside a block-aligned ciphertext is rejected by the padding
    // check itself.
    let aligned = &bad[..bad.len() / 16 * 16];
    let mut raw = aligned.to_vec();
    cfb_mode::Decryptor::<Aes256>::new(k.expose().into(), &iv.into()).decrypt(&mut raw);
    if !(1..=16).contains(raw.last().unwrap()) {
        assert_eq!(
            decrypt_file(&k, iv, aligned).unwrap_err(),
            CryptoError::Decrypt
        );
    }
}

#[test]
fn odk_tampering_and_truncation_detected_or_refused() {
    let v = json("collect-1.22.4-vector.json");
    let k = key_b64(s(&v["aes_key_b64"]));
    let iv: [u8; 16] = hex(s(&v["iv_hex"])).try_into().unwrap();
    let ct = read("collect-1.22.4-submission.xml.enc");
    let expected = read("collect-1.22.4-expected-plaintext.xml");

    // Flipped byte in the padding: rejected.
    let mut t = ct.clone();
    *t.last_mut().unwrap() ^= 0x01;
    assert_eq!(decrypt_file(&k, iv, &t).unwrap_err(), CryptoError::Decrypt);
    // Truncation: not a multiple of 16, or a missing last block.
    assert_eq!(
        decrypt_file(&k, iv, &ct[..ct.len() - 1]).unwrap_err(),
        CryptoError::Truncated
    );
    assert_eq!(
        decrypt_file(&k, iv, &[]).unwrap_err(),
        CryptoError::Truncated
    );
    assert_ne!(
        decrypt_file(&k, iv, &ct[..ct.len() - 16]).ok(),
        Some(expected.clone())
    );
    // Wrong IV (wrong index) or wrong key: padding fails (or, with 1/256-ish odds, garbage).
    assert_ne!(
        decrypt_file(&k, file_iv(s(&v["instance_id"]), &k, 0), &ct).ok(),
        Some(expected.clone())
    );
    assert_ne!(
        decrypt_file(&Key256::from_bytes([9; 32]), iv, &ct).ok(),
        Some(expected.clone())
    );
    // A flip earlier is not detected by CFB itself (no MAC): it changes the plaintext, which
    // the element signature then catches (see the round-trip test).
    let mut t = ct.clone();
    t[3] ^= 0x20;
    let p = decrypt_file(&k, iv, &t).unwrap();
    assert_ne!(p, expected);
    assert_eq!(p[3], expected[3] ^ 0x20);
}

#[test]
fn odk_streaming_decryptor_matches_one_shot() {
    let v = json("collect-1.22.4-vector.json");
    let k = key_b64(s(&v["aes_key_b64"]));
    let iv: [u8; 16] = hex(s(&v["iv_hex"])).try_into().unwrap();
    let ct = read("collect-1.22.4-submission.xml.enc");
    let expected = read("collect-1.22.4-expected-plaintext.xml");
    for chunk in [1, 5, 15, 16, 17, 100, 336, 1000] {
        let mut d = Decryptor::new(&k, iv);
        let mut out = Vec::new();
        for c in ct.chunks(chunk) {
            out.extend(d.update(c));
        }
        out.extend(d.finish().unwrap());
        assert_eq!(out, expected, "chunk size {chunk}");
    }
    let mut d = Decryptor::new(&k, iv);
    d.update(&ct[..20]);
    assert_eq!(d.finish().unwrap_err(), CryptoError::Truncated);
}

#[test]
fn odk_padding_lengths() {
    let k = Key256::from_bytes([3; 32]);
    let iv = [5u8; 16];
    for n in 0..=48 {
        let plain: Vec<u8> = (0..n as u8).collect();
        let ct = encrypt_file(&k, iv, &plain);
        assert_eq!(ct.len(), 16 * (n / 16 + 1), "length {n}");
        assert_eq!(decrypt_file(&k, iv, &ct).unwrap(), plain);
    }
}

// --- managed round trip (Central-generated) -----------------------------------------------------

#[test]
fn odk_managed_roundtrip_decrypts_with_documented_signature_mismatch() {
    let dir = "managed-roundtrip-generated";
    let v = json(&format!("{dir}/vector.json"));
    let private = managed_private();
    assert_eq!(
        private.public_key(),
        &OdkPublicKey::from_base64_spki(s(&v["public_key_b64_der_spki"])).unwrap()
    );

    let manifest = Manifest::parse(&read_str(&format!("{dir}/manifest.xml"))).unwrap();
    assert_eq!(manifest.form_id, "encm");
    assert_eq!(manifest.version.as_deref(), Some(s(&v["form_version"])));
    assert_eq!(manifest.instance_id, s(&v["instance_id"]));
    assert_eq!(manifest.media, vec!["photo.jpg.enc".to_owned()]);

    let k = unwrap_key(&private, &manifest.base64_encrypted_key).unwrap();
    assert_eq!(k.expose().to_vec(), hex(s(&v["aes_key_hex"])));
    assert_eq!(
        file_iv(&manifest.instance_id, &k, 0).to_vec(),
        hex(s(&v["iv_hex_by_index"]["0 (photo.jpg.enc)"]))
    );
    assert_eq!(
        file_iv(&manifest.instance_id, &k, 1).to_vec(),
        hex(s(&v["iv_hex_by_index"]["1 (submission.xml.enc)"]))
    );

    let photo = read(&format!("{dir}/photo.jpg.enc"));
    let xml = read(&format!("{dir}/submission.xml.enc"));
    let out = decrypt_submission(&private, &manifest, |name| match name {
        "photo.jpg.enc" => Some(photo.as_slice()),
        "submission.xml.enc" => Some(xml.as_slice()),
        _ => None,
    })
    .unwrap();
    assert_eq!(out.xml, read(&format!("{dir}/expected-submission.xml")));
    assert_eq!(
        out.media,
        vec![(
            "photo.jpg".to_owned(),
            Some(read(&format!("{dir}/expected-photo.jpg")))
        )]
    );
    // The generator signed encrypted names and ciphertext MD5s, not Collect's construction.
    assert_eq!(out.signature_valid, Some(false));
    let digest = decrypt_signature(&private, manifest.signature.as_deref().unwrap()).unwrap();
    let documented = s(&v["signature_source_string"]);
    assert_eq!(
        to_hex(&Md5::digest(documented.as_bytes())),
        s(&v["signature_md5_hex"])
    );
    assert_eq!(to_hex(&digest), s(&v["signature_md5_hex"]));
    assert!(documented.contains("photo.jpg.enc::"));
}

#[test]
fn odk_managed_key_archives_need_the_passphrase() {
    let v = json("managed-key-archives.json");
    let archives = v["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 2);
    for a in archives {
        let open = |pass: &str| {
            OdkPrivateKey::from_managed_archive(
                s(&a["privkey_b64"]),
                s(&a["salt_b64"]),
                s(&a["iv_b64"]),
                &SecretString::from(pass),
            )
        };
        let private = open(s(&a["passphrase"])).unwrap();
        let pub_pem = String::from_utf8(b64(s(&a["pubkey_pem_b64"]))).unwrap();
        assert_eq!(
            private.public_key(),
            &OdkPublicKey::from_pem(&pub_pem).unwrap()
        );
        for wrong in a["wrong_passphrases_must_fail"].as_array().unwrap() {
            assert_eq!(open(s(wrong)).unwrap_err(), CryptoError::Decrypt);
        }
    }
}

// --- signature ---------------------------------------------------------------------------------

#[test]
fn odk_signature_source_matches_spec_example() {
    let xml = b"<data/>";
    let files: [(&str, &[u8]); 2] = [("a.txt.enc", b"hello world"), ("submission.xml.enc", xml)];
    let src = SignatureSource {
        form_id: "t",
        version: Some("  "),
        base64_encrypted_key: "EKEY",
        instance_id: "uuid:00000000-0000-4000-8000-000000000000",
        files: &files,
    };
    assert_eq!(
        src.to_source_string(),
        format!(
            "t\nEKEY\nuuid:00000000-0000-4000-8000-000000000000\n\
             a.txt::5eb63bbbe01eeed093cb22bb8f5acdc3\nsubmission.xml::{}\n",
            to_hex(&Md5::digest(xml))
        )
    );
    let with_version = SignatureSource {
        version: Some("2024"),
        ..src
    };
    assert!(
        with_version
            .to_source_string()
            .starts_with("t\n2024\nEKEY\n")
    );
    assert_ne!(with_version.digest(), src.digest());
    assert!(!format!("{src:?}").contains("hello"));
}

#[test]
fn odk_signature_from_streamed_digests_equals_the_whole_file_form() {
    let xml = b"<data><x>1</x></data>";
    let files: [(&str, &[u8]); 2] = [("a.jpg.enc", b"photo bytes"), ("submission.xml.enc", xml)];
    let src = SignatureSource {
        form_id: "f",
        version: Some("3"),
        base64_encrypted_key: "EKEY",
        instance_id: "uuid:1",
        files: &files,
    };
    let md5s: Vec<(&str, [u8; 16])> = files
        .iter()
        .map(|(n, b)| (*n, Md5::digest(b).into()))
        .collect();
    let streamed = SignatureDigests {
        form_id: "f",
        version: Some("3"),
        base64_encrypted_key: "EKEY",
        instance_id: "uuid:1",
        files: &md5s,
    };
    assert_eq!(streamed.to_source_string(), src.to_source_string());
    let private = OdkPrivateKey::generate().unwrap();
    let sig = src.sign(private.public_key()).unwrap();
    assert!(verify_signature_digests(&private, &streamed, &sig));
    let other = SignatureDigests {
        instance_id: "uuid:2",
        ..streamed
    };
    assert!(!verify_signature_digests(&private, &other, &sig));
}

// --- whole submissions ---------------------------------------------------------------------------

#[test]
fn odk_encrypt_decrypt_round_trip_with_attachments_and_valid_signature() {
    let private = OdkPrivateKey::generate().unwrap();
    let public = OdkPublicKey::from_base64_spki(&private.public_key().to_base64_spki()).unwrap();
    let id = "uuid:6f1c2e0a-1111-4222-8333-944455556666";
    let xml = format!(
        "<data id=\"household_enc\" version=\"2024061801\"><name>Zoë &amp; Ana</name>\
         <meta><instanceID>{id}</instanceID></meta></data>"
    );
    let photo: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let attachments: [(&str, &[u8]); 3] = [
        ("1718700000000.jpg", &photo),
        ("audit.csv", b"event,start\nform start,1\n"),
        ("empty.txt", b""),
    ];
    let sub = encrypt_submission(
        &public,
        "household_enc",
        Some("2024061801"),
        id,
        xml.as_bytes(),
        &attachments,
    )
    .unwrap();
    let names: Vec<&str> = sub.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "1718700000000.jpg.enc",
            "audit.csv.enc",
            "empty.txt.enc",
            "submission.xml.enc"
        ]
    );
    assert_eq!(sub.files[2].1.len(), 16);
    assert_eq!(sub.files[0].1.len(), 5008);
    assert!(sub.manifest_xml.starts_with(
        "<data id=\"household_enc\" version=\"2024061801\" encrypted=\"yes\" \
         xmlns=\"http://www.opendatakit.org/xforms/encrypted\">\n  <base64EncryptedKey>"
    ));
    assert!(!format!("{sub:?}").contains("Zo"));

    let manifest = Manifest::parse(&sub.manifest_xml).unwrap();
    assert_eq!(manifest.to_xml(), sub.manifest_xml);
    assert_eq!(manifest.media, names[..3]);
    assert_eq!(manifest.signature.as_ref().unwrap().len(), 344);
    let lookup = |files: &[(String, Vec<u8>)], name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
    };
    let files = sub.files.clone();
    let out = decrypt_submission(&private, &manifest, |n| {
        files
            .iter()
            .find(|(f, _)| f == n)
            .map(|(_, b)| b.as_slice())
    })
    .unwrap();
    assert_eq!(out.xml, xml.as_bytes());
    assert_eq!(out.signature_valid, Some(true));
    for ((name, plain), (orig, bytes)) in out.media.iter().zip(attachments) {
        assert_eq!(name, orig);
        assert_eq!(plain.as_deref(), Some(bytes));
    }
    // Low-level pieces agree with the manifest: IV index = position.
    let k = unwrap_key(&private, &manifest.base64_encrypted_key).unwrap();
    for (i, name) in manifest.files_in_order().enumerate() {
        let ct = lookup(&sub.files, name).unwrap();
        assert!(decrypt_file(&k, file_iv(id, &k, i), &ct).is_ok());
    }

    // A flipped byte early in an attachment decrypts (CFB) but breaks the signature.
    let mut tampered = sub.files.clone();
    tampered[0].1[10] ^= 0x80;
    let out = decrypt_submission(&private, &manifest, |n| {
        tampered
            .iter()
            .find(|(f, _)| f == n)
            .map(|(_, b)| b.as_slice())
    })
    .unwrap();
    assert_eq!(out.signature_valid, Some(false));

    // Swapping media order in the manifest changes the IVs: refused or signature invalid.
    let mut swapped = manifest.clone();
    swapped.media.swap(0, 1);
    let result = decrypt_submission(&private, &swapped, |n| {
        files
            .iter()
            .find(|(f, _)| f == n)
            .map(|(_, b)| b.as_slice())
    });
    assert!(result.map_or(true, |o| o.signature_valid == Some(false)));

    // Another instanceID changes every IV.
    let mut other = manifest.clone();
    other.instance_id = "uuid:other".into();
    let result = decrypt_submission(&private, &other, |n| {
        files
            .iter()
            .find(|(f, _)| f == n)
            .map(|(_, b)| b.as_slice())
    });
    assert!(result.map_or(true, |o| o.xml != xml.as_bytes()));
}

#[test]
fn odk_encrypt_deterministic_with_fixed_key_and_no_version() {
    let private = OdkPrivateKey::generate().unwrap();
    let k = Key256::from_bytes(core::array::from_fn(|i| i as u8));
    let id = "uuid:00000000-0000-4000-8000-000000000000";
    let sub = encrypt_submission_with_key(
        private.public_key(),
        &k,
        "t",
        Some(""),
        id,
        b"<data/>",
        &[("a.txt", b"hello world")],
    )
    .unwrap();
    // Spec §10 vector 2: "hello world" is the first file (IV#1).
    assert_eq!(sub.files[0].1, hex("f76658be31fa7bbde46e65ae61d478fa"));
    assert!(
        sub.manifest_xml
            .starts_with("<data id=\"t\" encrypted=\"yes\"")
    );
    let manifest = Manifest::parse(&sub.manifest_xml).unwrap();
    assert_eq!(manifest.version, None);
    let files: [(&str, &[u8]); 2] = [
        ("a.txt.enc", b"hello world"),
        ("submission.xml.enc", b"<data/>"),
    ];
    let src = SignatureSource {
        form_id: "t",
        version: None,
        base64_encrypted_key: &manifest.base64_encrypted_key,
        instance_id: id,
        files: &files,
    };
    assert!(verify_signature(
        &private,
        &src,
        manifest.signature.as_deref().unwrap()
    ));
    assert!(!verify_signature(
        &OdkPrivateKey::generate().unwrap(),
        &src,
        manifest.signature.as_deref().unwrap()
    ));
}

#[test]
fn odk_encrypt_refuses_bad_inputs() {
    let private = OdkPrivateKey::generate().unwrap();
    let p = private.public_key();
    assert!(encrypt_submission(p, "", None, "uuid:x", b"x", &[]).is_err());
    assert!(encrypt_submission(p, "f", None, " ", b"x", &[]).is_err());
    for bad in ["", "submission.xml", "../x", ".hidden", "a/b"] {
        assert!(encrypt_submission(p, "f", None, "uuid:x", b"x", &[(bad, b"1")]).is_err());
    }
    assert!(encrypt_submission(p, "f", None, "uuid:x", b"x", &[("a", b"1"), ("a", b"2")]).is_err());
}

#[test]
fn odk_manifest_parse_by_local_name_and_refusals() {
    // Enketo-style namespaces, spec element order, entities.
    let xml = "<?xml version=\"1.0\"?><data xmlns=\"http://opendatakit.org/submissions\" \
               xmlns:orx=\"http://openrosa.org/xforms\" id=\"f&amp;1\" encrypted=\"yes\">\
               <base64EncryptedKey>\n  QUJD\n</base64EncryptedKey>\
               <encryptedXmlFile>submission.xml.enc</encryptedXmlFile>\
               <media><file>b.jpg.enc</file></media><media><file>a.jpg.enc</file></media>\
               <orx:meta><orx:instanceID> uuid:1 </orx:instanceID></orx:meta></data>";
    let m = Manifest::parse(xml).unwrap();
    assert_eq!(m.form_id, "f&1");
    assert_eq!(m.version, None);
    assert_eq!(m.base64_encrypted_key, "QUJD");
    assert_eq!(m.instance_id, "uuid:1");
    assert_eq!(m.media, ["b.jpg.enc", "a.jpg.enc"]);
    assert_eq!(m.signature, None);
    assert_eq!(
        m.files_in_order().collect::<Vec<_>>(),
        ["b.jpg.enc", "a.jpg.enc", "submission.xml.enc"]
    );
    assert_eq!(Manifest::parse(&m.to_xml()).unwrap(), m);

    for bad in [
        "",
        "<data id=\"x\"/>",
        "<other id=\"x\"><base64EncryptedKey>A</base64EncryptedKey></other>",
        "<data id=\"x\"><meta><instanceID>u</instanceID></meta>\
         <encryptedXmlFile>s</encryptedXmlFile></data>",
        "<data><base64EncryptedKey>A</base64EncryptedKey><meta><instanceID>u</instanceID></meta>\
         <encryptedXmlFile>s</encryptedXmlFile></data>",
        "<data id=\"x\"><base64EncryptedKey>A</base64EncryptedKey>\
         <encryptedXmlFile>s</encryptedXmlFile></data>",
        "<data id=\"x\"><base64EncryptedKey>A</base64EncryptedKey><meta><instanceID>u</instanceID></meta></data>",
        "<data id=\"x\"><unclosed></data>",
    ] {
        assert!(Manifest::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn generated_pem_with_passphrase_round_trips_and_wrong_passphrase_fails() {
    let pass = SecretString::from("correct horse battery staple");
    let (pem, public) = OdkPrivateKey::generate_pem(2048, Some(&pass)).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
    assert!(matches!(
        OdkPrivateKey::from_pem(&pem),
        Err(CryptoError::InvalidKey(_))
    ));
    let key = OdkPrivateKey::from_pem_with_passphrase(&pem, &pass).unwrap();
    assert_eq!(key.public_key(), &public);
    assert!(matches!(
        OdkPrivateKey::from_pem_with_passphrase(&pem, &SecretString::from("wrong")),
        Err(CryptoError::Decrypt)
    ));
    // The key works end to end.
    let enc = encrypt_submission(&public, "f", None, "uuid:1", b"<d/>", &[]).unwrap();
    let manifest = Manifest::parse(&enc.manifest_xml).unwrap();
    let out = decrypt_submission(&key, &manifest, |n| {
        enc.files
            .iter()
            .find(|(m, _)| m == n)
            .map(|(_, b)| b.as_slice())
    })
    .unwrap();
    assert_eq!(out.xml, b"<d/>");
    assert_eq!(out.signature_valid, Some(true));
}

#[test]
fn generated_pem_without_passphrase_and_sizes() {
    let (pem, public) = OdkPrivateKey::generate_pem(3072, None).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let key = OdkPrivateKey::from_pem(&pem).unwrap();
    assert_eq!(key.public_key(), &public);
    assert_eq!(key.size_bytes(), 384);
    // An unencrypted key opens whatever passphrase is given.
    OdkPrivateKey::from_pem_with_passphrase(&pem, &SecretString::from("x")).unwrap();
    assert!(OdkPrivateKey::generate_pem(1024, None).is_err());
    assert!(OdkPrivateKey::generate_pem(2048, Some(&SecretString::from(""))).is_err());
}
