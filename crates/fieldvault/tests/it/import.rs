//! Moving users from KoboToolbox: Django PBKDF2 hashes made by an independent implementation
//! (Python's hashlib, as Django itself uses) sign in unchanged and are strengthened at first
//! sign-in; other hash formats are imported locked until an operator sets a password.

use fieldvault_crypto::SecretString;
use fieldvault_store::{MasterKeySource, StorageSettings};

use crate::harness::{Server, client, cmd, run};

fn django_hash(password: &str, salt: &str, iterations: u32) -> Option<String> {
    let script = format!(
        "import hashlib,base64;print(base64.b64encode(hashlib.pbkdf2_hmac('sha256',{password:?}.encode(),{salt:?}.encode(),{iterations})).decode())"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .ok()?;
    out.status.success().then(|| {
        format!(
            "pbkdf2_sha256${iterations}${salt}${}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kobo_users_sign_in_with_their_passwords() {
    let Some(ana) = django_hash("Ana-Kobo-Password-1", "kobosalt1234567890abcd", 36_000) else {
        fieldvault_testkit::unavailable::<()>("python3");
        return;
    };
    let ghost = django_hash("Ghost-Password-22", "othersalt", 1000).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kobo-users.csv");
    std::fs::write(
        &file,
        format!(
            "username,email,password,is_superuser,is_active,date_joined\n\
             ana,ana@example.org,{ana},f,t,2019-05-01 10:00:00+00\n\
             ghost,,{ghost},f,f,2019-05-01 10:00:00+00\n\
             root,root@example.org,bcrypt_sha256$$2b$12$abcdefghijklmnopqrstuu,t,t,2019-05-01 10:00:00+00\n\
             bad name!,,{ghost},f,t,2019-05-01 10:00:00+00\n"
        ),
    )
    .unwrap();
    let import = |f: &std::path::Path| {
        let mut c = cmd(dir.path());
        c.args(["user", "import-kobo"]).arg(f);
        run(c, "")
    };
    let (ok, out, err) = import(&file);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "Imported 2 account(s) with their passwords; 1 need a new password; 1 skipped"
        ),
        "{out}"
    );
    assert!(out.contains("needs a password: root"), "{out}");

    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let login = |u: &'static str, p: &'static str| {
        let c = c.clone();
        let url = srv.url("/v1/users/current");
        async move {
            c.get(url)
                .basic_auth(u, Some(p))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        login("ana", "Ana-Kobo-Password-1").await,
        200,
        "the KoboToolbox password works"
    );
    assert_eq!(
        login("ghost", "Ghost-Password-22").await,
        401,
        "inactive stays inactive"
    );
    assert_eq!(
        login("root", "anything-at-all").await,
        403,
        "unsupported hash: locked behind a forced reset (auth.password_reset_required)"
    );

    // The weak imported hash was replaced at sign-in by one at the current cost.
    let data = dir.path().join("fieldvault-data");
    let settings = StorageSettings {
        data_dir: data.clone(),
        database_url: None,
        blobs: None,
        master_key: MasterKeySource::File(data.join("master.key")),
        max_connections: 1,
    };
    let opened = fieldvault_store::open(&settings, false).await.unwrap();
    let stored = opened.store.user_by_username("ana").await.unwrap().unwrap();
    assert!(
        stored.password_hash.starts_with("pbkdf2_sha256$1000000$"),
        "rehashed"
    );
    assert!(
        fieldvault_crypto::password::verify(
            &SecretString::from("Ana-Kobo-Password-1"),
            &stored.password_hash
        )
        .unwrap()
    );
    opened.store.close().await;

    // An operator unlocks the imported administrator.
    let mut set = cmd(dir.path());
    set.args(["user", "set-password", "root", "--password-stdin"]);
    let (ok, _, err) = run(set, "Tamarind-Okapi-Glacier-41\n");
    assert!(ok, "{err}");
    assert_eq!(login("root", "Tamarind-Okapi-Glacier-41").await, 200);

    // Importing again changes nothing.
    let (ok, out, _) = import(&file);
    assert!(
        ok && out.contains("Imported 0 account(s)")
            && out.contains("skipped ana: the username exists already"),
        "{out}"
    );
    let json = dir.path().join("more.json");
    std::fs::write(&json, r#"[{"username":"zed","email":"","password":"md5$abc$def","is_superuser":false,"is_active":true}]"#).unwrap();
    let (ok, out, _) = import(&json);
    assert!(ok && out.contains("1 need a new password"), "{out}");
    let (ok, _, err) = import(&dir.path().join("missing.csv"));
    assert!(!ok && err.contains("cannot read"), "{err}");
    assert!(srv.stop());
}
