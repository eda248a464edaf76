//! The store suite: one set of behaviours, run against SQLite always and PostgreSQL whenever
//! `FIELDVAULT_TEST_PG` is set (always in CI), plus the blob store on a local directory and on a
//! real S3-compatible server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use fieldvault_core::{ProjectId, UserId};
use fieldvault_crypto::{Key256, MasterKey, SecretString};
use fieldvault_store::blob::{BlobSettings, BlobStore, PART_LEN, S3Settings};
use fieldvault_store::keyring::rotate_data_keys;
use fieldvault_store::open::{RotateTo, rotate_master_key};
use fieldvault_store::{
    Cursor, Deleted, IngestOutcome, Keyring, MasterKeySource, NewFormDef, NewProject,
    NewSubmission, NewUser, PageQuery, Purged, ReceivedAttachment, StorageSettings, StoreError,
    now_ms, open,
};
use fieldvault_testkit::pg::TestDb;
use fieldvault_testkit::s3::S3Server;

fn settings(dir: &std::path::Path, url: Option<&str>) -> StorageSettings {
    StorageSettings {
        data_dir: dir.to_path_buf(),
        database_url: url.map(SecretString::from),
        blobs: None,
        master_key: MasterKeySource::File(dir.join("master.key")),
        max_connections: 4,
    }
}

/// A project named `name` under a fresh data key, created by nobody.
async fn new_project(
    opened: &fieldvault_store::Opened,
    name: &str,
) -> fieldvault_store::ProjectRow {
    let (dk, _) = opened.keyring.new_data_key().unwrap();
    opened
        .store
        .create_project(
            &NewProject {
                name: name.into(),
                description: None,
                created_by: None,
            },
            &dk,
        )
        .await
        .unwrap()
}

fn user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        email: Some(format!("{name}@example.org")),
        password_hash: "pbkdf2_sha256$1000$salt$aGFzaA==".into(),
        superuser: false,
        active: true,
        must_reset_password: false,
    }
}

/// The behaviours every backend must share.
async fn suite(settings: StorageSettings) {
    let opened = open(&settings, true).await.unwrap();
    let store = opened.store.clone();
    let keyring = opened.keyring.clone();
    store.health().await.unwrap();

    // Metadata: the first writer wins, later writers read it back.
    assert_eq!(store.meta_init("suite", b"one").await.unwrap(), b"one");
    assert_eq!(store.meta_init("suite", b"two").await.unwrap(), b"one");
    assert_eq!(
        store.meta("suite").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(store.meta("absent").await.unwrap(), None);

    // Users: unique case-insensitively, found by name and id.
    assert_eq!(store.count_users().await.unwrap(), 0);
    let alice = store.create_user(&user("alice")).await.unwrap();
    assert_eq!(alice.username, "alice");
    assert!(alice.active && !alice.superuser);
    match store.create_user(&user("ALICE")).await {
        Err(StoreError::Conflict { constraint }) => assert_eq!(constraint, "users_username_key"),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(
        store.count_users().await.unwrap(),
        1,
        "a refused insert writes nothing"
    );
    assert_eq!(
        store.user_by_username("Alice").await.unwrap().unwrap().id,
        alice.id
    );
    assert_eq!(
        store
            .user_by_id(alice.user_id())
            .await
            .unwrap()
            .unwrap()
            .username,
        "alice"
    );
    assert!(store.user_by_id(UserId(9_999)).await.unwrap().is_none());
    store
        .update_password_hash(alice.user_id(), "pbkdf2_sha256$2000$salt$aGFzaA==")
        .await
        .unwrap();
    assert!(
        store
            .user_by_id(alice.user_id())
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .contains("$2000$")
    );
    assert!(matches!(
        store.update_password_hash(UserId(9_999), "x").await,
        Err(StoreError::NotFound)
    ));
    store.set_user_active(alice.user_id(), false).await.unwrap();
    assert!(
        !store
            .user_by_id(alice.user_id())
            .await
            .unwrap()
            .unwrap()
            .active
    );
    store.set_user_active(alice.user_id(), true).await.unwrap();
    assert!(matches!(
        store.set_user_active(UserId(9_999), true).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        !format!("{alice:?}").contains("pbkdf2"),
        "hashes stay out of Debug"
    );

    // Listing: by id, bounded, filtered by a case-insensitive substring of username or e-mail,
    // with LIKE's wildcards taken literally.
    let bob = store.create_user(&user("Bob_Smith")).await.unwrap();
    let mut carol = user("carol");
    carol.email = None;
    let carol = store.create_user(&carol).await.unwrap();
    let names = |rows: Vec<fieldvault_store::UserRow>| {
        rows.into_iter().map(|u| u.username).collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list_users(None, 100, 0).await.unwrap()),
        ["alice", "Bob_Smith", "carol"]
    );
    assert_eq!(
        names(store.list_users(None, 2, 1).await.unwrap()),
        ["Bob_Smith", "carol"]
    );
    assert_eq!(
        names(store.list_users(Some("BOB"), 100, 0).await.unwrap()),
        ["Bob_Smith"]
    );
    assert_eq!(
        names(store.list_users(Some("example.ORG"), 100, 0).await.unwrap()),
        ["alice", "Bob_Smith"],
        "the e-mail matches; an account without one does not"
    );
    assert_eq!(
        names(store.list_users(Some("b_s"), 100, 0).await.unwrap()),
        ["Bob_Smith"]
    );
    assert!(
        store
            .list_users(Some("%"), 100, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_users(Some("a_i"), 100, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_users(Some("nobody"), 100, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(bob.id, carol.id - 1);

    // Projects with their data keys, atomically.
    let (dk, key) = keyring.new_data_key().unwrap();
    let p = store
        .create_project(
            &NewProject {
                name: "Survey".into(),
                description: None,
                created_by: Some(alice.user_id()),
            },
            &dk,
        )
        .await
        .unwrap();
    assert_eq!(p.data_key_id.as_deref(), Some(dk.id.as_str()));
    assert_eq!(store.project(p.project_id()).await.unwrap().unwrap(), p);
    assert!(store.project(ProjectId(9_999)).await.unwrap().is_none());
    assert_eq!(store.list_projects().await.unwrap(), vec![p.clone()]);
    assert_eq!(keyring.data_key(&dk.id).await.unwrap(), key);

    // Editing a project: every field is replaced, `updated_at` is stamped, unknown ids are refused.
    let edited = store
        .update_project(p.project_id(), "Survey 2", Some("Round two"), true)
        .await
        .unwrap();
    assert_eq!(edited.name, "Survey 2");
    assert_eq!(edited.description.as_deref(), Some("Round two"));
    assert!(edited.archived);
    assert!(edited.updated_at.is_some());
    assert_eq!(edited.created_at, p.created_at);
    assert_eq!(
        store.project(p.project_id()).await.unwrap().unwrap(),
        edited
    );
    let p = store
        .update_project(p.project_id(), "Survey", None, false)
        .await
        .unwrap();
    assert_eq!(p.description, None);
    assert!(!p.archived);
    assert!(matches!(
        store
            .update_project(ProjectId(9_999), "x", None, false)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_projects().await.unwrap(), vec![p.clone()]);
    // A second keyring (a fresh process) unwraps it from the store.
    let fresh = Keyring::attach(keyring.master().clone(), store.clone())
        .await
        .unwrap();
    assert_eq!(fresh.data_key(&dk.id).await.unwrap(), key);

    // Reusing a data key id fails and leaves no half-created project behind.
    let dup = store
        .create_project(
            &NewProject {
                name: "Dup".into(),
                description: None,
                created_by: None,
            },
            &dk,
        )
        .await;
    assert!(
        matches!(dup, Err(StoreError::Conflict { .. })),
        "{:?}",
        dup.err()
    );
    assert_eq!(store.list_projects().await.unwrap().len(), 1);

    // A different master key is refused by name.
    let other = MasterKey::from_key(&Key256::generate().unwrap()).unwrap();
    assert!(matches!(
        Keyring::attach(other.clone(), store.clone()).await,
        Err(StoreError::WrongKey(_))
    ));

    // Re-wrapping under a new key: the old key no longer attaches, the new one opens the data key.
    let n = rotate_data_keys(store.as_ref(), keyring.master(), &other)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(matches!(
        keyring.ensure_current().await,
        Err(StoreError::WrongKey(_))
    ));
    let rotated = Keyring::attach(other.clone(), store.clone()).await.unwrap();
    assert_eq!(rotated.data_key(&dk.id).await.unwrap(), key);
    // Running it again (a resumed rotation) is harmless.
    rotate_data_keys(store.as_ref(), keyring.master(), &other)
        .await
        .unwrap();
    assert_eq!(
        Keyring::attach(other.clone(), store.clone())
            .await
            .unwrap()
            .data_key(&dk.id)
            .await
            .unwrap(),
        key
    );

    // Sessions and API tokens: found by hash while valid, never after expiry or revocation.
    let now = fieldvault_store::now_ms();
    store
        .create_session(alice.id, b"sess-1", now + 60_000)
        .await
        .unwrap();
    store
        .create_session(alice.id, b"sess-old", now - 1)
        .await
        .unwrap();
    assert_eq!(
        store
            .session_by_hash(b"sess-1", now)
            .await
            .unwrap()
            .unwrap()
            .user_id,
        alice.id
    );
    assert!(
        store
            .session_by_hash(b"sess-old", now)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(store.delete_session(b"sess-1").await.unwrap());
    assert!(!store.delete_session(b"sess-1").await.unwrap());
    store
        .create_session(alice.id, b"sess-2", now + 60_000)
        .await
        .unwrap();
    assert_eq!(store.delete_user_sessions(alice.id).await.unwrap(), 2);
    let t = store
        .create_api_token(alice.id, "script", b"tok-1", "data:read", None)
        .await
        .unwrap();
    store
        .create_api_token(alice.id, "old", b"tok-2", "data:read", Some(now - 1))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_api_token(alice.id, "dup", b"tok-1", "admin", None)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store
            .api_token_by_hash(b"tok-1", now)
            .await
            .unwrap()
            .unwrap()
            .id,
        t.id
    );
    assert!(
        store
            .api_token_by_hash(b"tok-2", now)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    store.touch_api_token(t.id, now, "192.0.2.7").await.unwrap();
    let listed = store.api_tokens(alice.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    let used = listed.iter().find(|x| x.id == t.id).unwrap();
    assert_eq!(
        (used.last_used_at, used.last_used_ip.as_deref()),
        (Some(now), Some("192.0.2.7"))
    );
    assert!(
        matches!(
            store.revoke_api_token(9_999, t.id).await,
            Err(StoreError::NotFound)
        ),
        "only the owner"
    );
    store.revoke_api_token(alice.id, t.id).await.unwrap();
    assert!(
        store
            .api_token_by_hash(b"tok-1", now)
            .await
            .unwrap()
            .is_none(),
        "revoked"
    );
    assert!(matches!(
        store.revoke_api_token(alice.id, t.id).await,
        Err(StoreError::NotFound)
    ));

    // The audit chain: concurrent appends extend one chain; any tampering is named.
    use fieldvault_store::audit_chain::{Verified, verify};
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                store
                    .append_audit(&fieldvault_store::NewAudit {
                        actor: format!("user:t{t}"),
                        action: "test.append".into(),
                        target: Some(format!("item:{i}")),
                        details: format!("{{\"i\":{i}}}"),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = store.audit_entries(0, 1000).await.unwrap();
    let head = store.audit_head().await.unwrap();
    assert_eq!(
        verify(&rows, head.clone()),
        Verified::Intact { entries: 20 }
    );
    let mut edited = rows.clone();
    edited[3].details = "{}".into();
    assert!(matches!(
        verify(&edited, head.clone()),
        Verified::Broken { seq: 4, .. }
    ));
    let mut deleted = rows.clone();
    deleted.remove(7);
    assert!(matches!(
        verify(&deleted, head.clone()),
        Verified::Broken { seq: 8, .. }
    ));
    let mut swapped = rows.clone();
    swapped.swap(10, 11);
    assert!(matches!(
        verify(&swapped, head.clone()),
        Verified::Broken { seq: 11, .. }
    ));
    let truncated = rows[..19].to_vec();
    assert!(matches!(
        verify(&truncated, head.clone()),
        Verified::Broken { seq: 20, .. }
    ));
    assert_eq!(store.audit_entries(15, 100).await.unwrap().len(), 5);

    // Throttle state: concurrent failures from several instances are each counted once.
    use fieldvault_core::softlock::{IP, LockState};
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .throttle_update("ip:192.0.2.1", &|s: LockState| s.fail(&IP, 1_000))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store.throttle_state("ip:192.0.2.1").await.unwrap().failures,
        10
    );
    store.throttle_clear("ip:192.0.2.1").await.unwrap();
    assert_eq!(
        store.throttle_state("ip:192.0.2.1").await.unwrap(),
        LockState::default()
    );

    // Second factor: a step and a recovery code are each accepted once.
    store.set_totp_pending(alice.id, b"sealed").await.unwrap();
    assert!(
        !store.accept_totp_step(alice.id, 5).await.unwrap(),
        "not before confirmation"
    );
    store
        .confirm_totp(alice.id, 5, &[b"r1".to_vec(), b"r2".to_vec()])
        .await
        .unwrap();
    assert!(
        !store.accept_totp_step(alice.id, 5).await.unwrap(),
        "the confirming step is spent"
    );
    assert!(store.accept_totp_step(alice.id, 6).await.unwrap());
    assert!(
        !store.accept_totp_step(alice.id, 6).await.unwrap(),
        "replay"
    );
    assert!(store.use_recovery_code(alice.id, b"r1").await.unwrap());
    assert!(!store.use_recovery_code(alice.id, b"r1").await.unwrap());
    store.delete_totp(alice.id).await.unwrap();
    assert!(store.totp(alice.id).await.unwrap().is_none());
    let site = rotated.site_key().await.unwrap();
    assert_eq!(
        Keyring::attach(other.clone(), store.clone())
            .await
            .unwrap()
            .site_key()
            .await
            .unwrap(),
        site
    );

    // Crypto-shredding: the key is gone, the project no longer points at it.
    store.destroy_data_key(&dk.id).await.unwrap();
    rotated.forget(&dk.id);
    assert!(matches!(
        rotated.data_key(&dk.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .project(p.project_id())
            .await
            .unwrap()
            .unwrap()
            .data_key_id,
        None
    );
    assert!(matches!(
        store.destroy_data_key(&dk.id).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn suite_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    suite(settings(&dir.path().join("data"), None)).await;
    let dir = tempfile::tempdir().unwrap();
    forms_and_submissions(settings(&dir.path().join("data"), None)).await;
    let dir = tempfile::tempdir().unwrap();
    lifecycle(settings(&dir.path().join("data"), None)).await;
}

#[tokio::test]
async fn suite_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    suite(settings(dir.path(), Some(&db.url))).await;
    db.drop_db().await;
    let Some(db) = TestDb::create().await else {
        return;
    };
    forms_and_submissions(settings(dir.path(), Some(&db.url))).await;
    db.drop_db().await;
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    lifecycle(settings(dir.path(), Some(&db.url))).await;
    db.drop_db().await;
}

fn def(id: &str, version: &str, media: &[&str]) -> NewFormDef {
    let xml = format!(
        "<h:html><model><instance><data id=\"{id}\" version=\"{version}\"/></instance></model></h:html>"
    );
    NewFormDef {
        xml_form_id: id.into(),
        version: version.into(),
        title: Some(format!("Form {id}")),
        md5: format!("md5:{:032x}", xml.len()),
        xml: xml.into_bytes(),
        public_key: None,
        binary_fields: "[\"/data/photo\"]".into(),
        media: media.iter().map(|m| m.to_string()).collect(),
    }
}

fn sub(project: i64, form: i64, def_id: i64, instance: &str, body: &str) -> NewSubmission {
    NewSubmission {
        project_id: project,
        form_id: form,
        form_def_id: def_id,
        form_version: "1".into(),
        instance_id: instance.into(),
        deprecated_id: None,
        instance_name: None,
        xml_sealed: body.as_bytes().to_vec(),
        xml_sha256: body
            .as_bytes()
            .iter()
            .rev()
            .copied()
            .chain([0u8; 8])
            .take(8)
            .collect(),
        xml_size: body.len() as i64,
        encrypted: false,
        submitter_user_id: None,
        submitter_app_user_id: None,
        device_id: Some("collect:test".into()),
        expected_attachments: vec!["photo.jpg".into()],
        attachments: vec![],
        fits_form: None,
    }
}

fn att(name: &str, blob: &str) -> ReceivedAttachment {
    ReceivedAttachment {
        name: name.into(),
        content_type: Some("image/jpeg".into()),
        blob_name: blob.into(),
        size: 3,
        sha256: vec![1, 2, 3],
    }
}

/// Forms, collectors and submission intake: the same behaviour on both backends.
async fn forms_and_submissions(settings: StorageSettings) {
    let opened = open(&settings, true).await.unwrap();
    let store = opened.store.clone();
    let p = new_project(&opened, "P").await;
    let pid = p.project_id();

    // Forms: create published, refuse a duplicate id, drafts, versions.
    let (f, d1) = store
        .create_form(pid, &def("household", "1", &["logo.png"]), true)
        .await
        .unwrap();
    assert_eq!(f.published_def_id, Some(d1.id));
    assert!(d1.published_at.is_some());
    assert_eq!(f.state, "open");
    match store
        .create_form(pid, &def("household", "2", &[]), false)
        .await
    {
        Err(StoreError::Conflict { constraint }) => {
            assert_eq!(constraint, "forms_project_xml_form_id_key")
        }
        other => panic!("{:?}", other.map(|x| x.0)),
    }
    let before = store.counts().await.unwrap();
    let d_same = store
        .replace_draft(f.id, &def("household", "1", &[]))
        .await
        .unwrap();
    assert!(d_same.published_at.is_none());
    match store.publish_draft(f.id).await {
        Err(StoreError::Conflict { constraint }) => {
            assert_eq!(constraint, "form_defs_published_version_key")
        }
        other => panic!("{other:?}"),
    }
    let d2 = store
        .replace_draft(f.id, &def("household", "2", &["logo.png"]))
        .await
        .unwrap();
    assert_eq!(
        store.counts().await.unwrap().form_defs,
        before.form_defs + 1,
        "replaced draft removed"
    );
    let pub2 = store.publish_draft(f.id).await.unwrap();
    assert_eq!(pub2.id, d2.id);
    assert!(matches!(
        store.publish_draft(f.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.published_defs(f.id).await.unwrap().len(), 2);
    let f = store.form(pid, "household").await.unwrap().unwrap();
    assert_eq!((f.published_def_id, f.draft_def_id), (Some(d2.id), None));
    assert_eq!(store.forms(pid).await.unwrap().len(), 1);

    // Media slots.
    assert_eq!(
        store.form_attachments(d2.id).await.unwrap()[0].blob_name,
        None
    );
    let prev = store
        .set_form_attachment(d2.id, "logo.png", Some("image/png"), "b1", "md5:00", 3)
        .await
        .unwrap();
    assert_eq!(prev, None);
    let prev = store
        .set_form_attachment(d2.id, "logo.png", Some("image/png"), "b2", "md5:01", 4)
        .await
        .unwrap();
    assert_eq!(prev.as_deref(), Some("b1"));
    assert!(matches!(
        store
            .set_form_attachment(d2.id, "other.png", None, "b3", "md5:02", 1)
            .await,
        Err(StoreError::NotFound)
    ));
    let f = store.update_form(f.id, "closing", true).await.unwrap();
    assert_eq!((f.state.as_str(), f.anonymous), ("closing", true));

    // Roles and collectors.
    let u = store.create_user(&user("manager")).await.unwrap();
    store
        .set_project_role(pid, u.user_id(), "viewer")
        .await
        .unwrap();
    store
        .set_project_role(pid, u.user_id(), "manager")
        .await
        .unwrap();
    assert_eq!(
        store
            .project_role(pid, u.user_id())
            .await
            .unwrap()
            .as_deref(),
        Some("manager")
    );
    // Listing and removing roles: by account, filtered by role; removal only of the role held.
    let v = store.create_user(&user("looker")).await.unwrap();
    store
        .set_project_role(pid, v.user_id(), "viewer")
        .await
        .unwrap();
    let all = store.project_roles(pid, None).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.username.as_str(), r.role.as_str()))
            .collect::<Vec<_>>(),
        [("manager", "manager"), ("looker", "viewer")]
    );
    assert_eq!(all[1].user_id, v.id);
    assert_eq!(all[1].user_created_at, v.created_at);
    let viewers = store.project_roles(pid, Some("viewer")).await.unwrap();
    assert_eq!(viewers.len(), 1);
    assert_eq!(viewers[0].user_id, v.id);
    assert!(
        store
            .project_roles(pid, Some("formfill"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .project_roles(ProjectId(9_999), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.remove_project_role(pid, v.user_id(), "manager").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.project_roles(pid, None).await.unwrap().len(), 2);
    store
        .remove_project_role(pid, v.user_id(), "viewer")
        .await
        .unwrap();
    assert_eq!(store.project_role(pid, v.user_id()).await.unwrap(), None);
    assert!(matches!(
        store.remove_project_role(pid, v.user_id(), "viewer").await,
        Err(StoreError::NotFound)
    ));
    let au = store
        .create_app_user(pid, "Enumerator 1", b"hash-1", Some(u.user_id()))
        .await
        .unwrap();
    assert_eq!(
        store
            .app_user_by_token_hash(b"hash-1")
            .await
            .unwrap()
            .unwrap()
            .id,
        au.id
    );
    assert!(matches!(
        store.create_app_user(pid, "dup", b"hash-1", None).await,
        Err(StoreError::Conflict { .. })
    ));
    store.assign_form(au.id, f.id).await.unwrap();
    store.assign_form(au.id, f.id).await.unwrap();
    assert_eq!(store.assigned_forms(au.id).await.unwrap(), vec![f.id]);
    store.unassign_form(au.id, f.id).await.unwrap();
    assert!(store.assigned_forms(au.id).await.unwrap().is_empty());
    store.revoke_app_user(au.id).await.unwrap();
    assert!(
        store
            .app_user_by_token_hash(b"hash-1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.app_users(pid).await.unwrap().len(), 1);

    // Intake: new, retry, split upload, conflict.
    let (pi, fi, di) = (p.id, f.id, d2.id);
    let r = store
        .ingest(&[sub(pi, fi, di, "uuid:a", "<a/>")])
        .await
        .unwrap();
    let IngestOutcome::Created { submission_id } = r.outcomes[0] else {
        panic!("{r:?}")
    };
    let mut retry = sub(pi, fi, di, "uuid:a", "<a/>");
    retry.attachments = vec![
        att("photo.jpg", "blob-photo"),
        att("stray.txt", "blob-stray"),
    ];
    let r = store.ingest(&[retry.clone()]).await.unwrap();
    assert_eq!(
        r.outcomes,
        vec![IngestOutcome::Duplicate {
            submission_id,
            added_attachments: 1
        }]
    );
    assert_eq!(
        r.unused_blobs,
        vec!["blob-stray".to_owned()],
        "unexpected files are not kept"
    );
    let r = store.ingest(&[retry]).await.unwrap();
    assert_eq!(
        r.outcomes,
        vec![IngestOutcome::Duplicate {
            submission_id,
            added_attachments: 0
        }]
    );
    assert_eq!(
        r.unused_blobs,
        vec!["blob-stray".to_owned()],
        "a resend of the very blobs the row holds (an intake-journal replay) adds nothing and \
         must not report the kept blob as unused"
    );
    let mut resend = sub(pi, fi, di, "uuid:a", "<a/>");
    resend.attachments = vec![att("photo.jpg", "blob-photo-again")];
    let r = store.ingest(&[resend]).await.unwrap();
    assert_eq!(
        r.unused_blobs,
        vec!["blob-photo-again".to_owned()],
        "a client resend brings a new copy, which is not kept"
    );
    let before = store.counts().await.unwrap();
    let r = store
        .ingest(&[sub(pi, fi, di, "uuid:a", "<different/>")])
        .await
        .unwrap();
    assert_eq!(r.outcomes, vec![IngestOutcome::Conflict]);
    assert_eq!(
        store.counts().await.unwrap(),
        before,
        "a conflict changes nothing"
    );

    // Edits keep history and carry attachments forward.
    let mut edit = sub(pi, fi, di, "uuid:a2", "<a2/>");
    edit.deprecated_id = Some("uuid:a".into());
    let r = store.ingest(&[edit.clone()]).await.unwrap();
    assert_eq!(r.outcomes, vec![IngestOutcome::Edited { submission_id }]);
    let versions = store.submission_versions(submission_id).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert!(!versions[0].current && versions[1].current);
    assert_eq!(versions[1].deprecated_id.as_deref(), Some("uuid:a"));
    let atts = store.submission_attachments(versions[1].id).await.unwrap();
    assert_eq!(
        atts[0].blob_name.as_deref(),
        Some("blob-photo"),
        "carried forward"
    );
    let s = store.submission(fi, "uuid:a").await.unwrap().unwrap();
    assert_eq!(s.review_state, "edited");
    let mut stale = sub(pi, fi, di, "uuid:a3", "<a3/>");
    stale.deprecated_id = Some("uuid:a".into());
    let mut unknown = sub(pi, fi, di, "uuid:a4", "<a4/>");
    unknown.deprecated_id = Some("uuid:nope".into());
    // One batch, one transaction, one outcome per item.
    let r = store
        .ingest(&[stale, unknown, sub(pi, fi, di, "uuid:b", "<b/>"), edit])
        .await
        .unwrap();
    assert_eq!(r.outcomes[0], IngestOutcome::DeprecatedNotCurrent);
    assert_eq!(r.outcomes[1], IngestOutcome::DeprecatedNotFound);
    assert!(matches!(r.outcomes[2], IngestOutcome::Created { .. }));
    assert!(
        matches!(r.outcomes[3], IngestOutcome::Duplicate { .. }),
        "a retried edit is a duplicate"
    );
    assert_eq!(store.submissions(fi, 10, 0).await.unwrap().len(), 2);
    assert_eq!(
        store.submissions(fi, 1, 1).await.unwrap()[0].instance_id,
        "uuid:a"
    );

    // Concurrent posts of one instanceID never create two rows.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.ingest(&[sub(pi, fi, di, "uuid:race", "<r/>")]).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) if matches!(r.outcomes[0], IngestOutcome::Created { .. }) => created += 1,
            Ok(r) => assert!(
                matches!(r.outcomes[0], IngestOutcome::Duplicate { .. }),
                "{r:?}"
            ),
            // PostgreSQL: the loser of a race on the unique index; the caller retries.
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(created, 1);
    let rows = store.submissions(fi, 100, 0).await.unwrap();
    assert_eq!(
        rows.iter().filter(|r| r.instance_id == "uuid:race").count(),
        1
    );

    // A group-commit batch mixing new submissions (each backend writes those on its fast path:
    // one statement on PostgreSQL, the intake writer's own connection on SQLite) with a retry of one of them, a conflict, an existing submission and an unexpected file:
    // each gets the answer it would get alone, in order, and only used blobs are kept.
    let mut fresh = sub(pi, fi, di, "uuid:g1", "<g1/>");
    fresh.attachments = vec![att("photo.jpg", "blob-g1"), att("extra.bin", "blob-extra")];
    let mut retry = fresh.clone();
    retry.attachments = vec![att("photo.jpg", "blob-g1-again")];
    let r = store
        .ingest(&[
            fresh,
            sub(pi, fi, di, "uuid:g2", "<g2/>"),
            retry,
            sub(pi, fi, di, "uuid:g2", "<g2-different/>"),
            sub(pi, fi, di, "uuid:b", "<b/>"),
        ])
        .await
        .unwrap();
    assert!(
        matches!(r.outcomes[0], IngestOutcome::Created { .. }),
        "{r:?}"
    );
    assert!(
        matches!(r.outcomes[1], IngestOutcome::Created { .. }),
        "{r:?}"
    );
    assert!(
        matches!(
            r.outcomes[2],
            IngestOutcome::Duplicate {
                added_attachments: 0,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(r.outcomes[3], IngestOutcome::Conflict);
    assert!(
        matches!(r.outcomes[4], IngestOutcome::Duplicate { .. }),
        "{r:?}"
    );
    let mut unused = r.unused_blobs.clone();
    unused.sort();
    assert_eq!(unused, vec!["blob-extra", "blob-g1-again"]);
    let g1 = store.submission(fi, "uuid:g1").await.unwrap().unwrap();
    let v = store.submission_versions(g1.id).await.unwrap();
    assert_eq!(v.len(), 1);
    let atts = store.submission_attachments(v[0].id).await.unwrap();
    assert_eq!(atts.len(), 1);
    assert_eq!(atts[0].blob_name.as_deref(), Some("blob-g1"));
    assert_eq!(atts[0].size, Some(3));
    let g2 = store.submission(fi, "uuid:g2").await.unwrap().unwrap();
    let v = store.submission_versions(g2.id).await.unwrap();
    assert_eq!(v[0].xml_sealed, b"<g2/>");
    let atts = store.submission_attachments(v[0].id).await.unwrap();
    assert_eq!(
        atts.len(),
        1,
        "the expected slot exists before its file arrives"
    );
    assert_eq!(atts[0].blob_name, None);

    // A row the schema refuses (its definition does not exist) fails the fast path's
    // transaction as a whole: the new submission before it in the batch is not left behind,
    // and the next batch is written as usual.
    let before = store.counts().await.unwrap();
    let orphan = sub(pi, fi, di + 1_000_000, "uuid:orphan", "<o/>");
    let refused = store
        .ingest(&[sub(pi, fi, di, "uuid:beside-orphan", "<ok/>"), orphan])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(store.counts().await.unwrap(), before);
    assert!(
        store
            .submission(fi, "uuid:beside-orphan")
            .await
            .unwrap()
            .is_none()
    );
    let r = store
        .ingest(&[sub(pi, fi, di, "uuid:after-orphan", "<ok/>")])
        .await
        .unwrap();
    assert!(
        matches!(r.outcomes[0], IngestOutcome::Created { .. }),
        "{r:?}"
    );

    // The token lookup of every collector request (on SQLite, answered from the lookup cache
    // between changes): assignments and a revocation are seen at once, intake in between or
    // not.
    let lookup = |hash: &'static [u8]| {
        let store = store.clone();
        async move { store.app_user_with_forms_by_token_hash(hash).await.unwrap() }
    };
    let au2 = store
        .create_app_user(pid, "Enumerator 2", b"hash-2", None)
        .await
        .unwrap();
    let (found, forms) = lookup(b"hash-2").await.unwrap();
    assert_eq!(
        (found.id, found.display_name.as_str()),
        (au2.id, "Enumerator 2")
    );
    assert!(forms.is_empty());
    store.assign_form(au2.id, fi).await.unwrap();
    assert_eq!(lookup(b"hash-2").await.unwrap().1, vec![fi]);
    store
        .ingest(&[sub(pi, fi, di, "uuid:between-lookups", "<x/>")])
        .await
        .unwrap();
    assert_eq!(lookup(b"hash-2").await.unwrap().1, vec![fi]);
    store.unassign_form(au2.id, fi).await.unwrap();
    assert!(lookup(b"hash-2").await.unwrap().1.is_empty());
    store.revoke_app_user(au2.id).await.unwrap();
    assert!(
        lookup(b"hash-2").await.is_none(),
        "a revoked token is refused at once"
    );
    assert!(lookup(b"hash-1").await.is_none());

    // The same while other requests keep looking the token up (on SQLite, from the lookup
    // cache): once the revocation or the withdrawal has returned, no lookup sees the old state.
    for round in 0..20u32 {
        let hash = format!("hash-race-{round}").into_bytes();
        let au = store
            .create_app_user(pid, "Racer", &hash, None)
            .await
            .unwrap();
        store.assign_form(au.id, fi).await.unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammers: Vec<_> = (0..3)
            .map(|_| {
                let (store, hash, stop) = (store.clone(), hash.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut seen = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if store
                            .app_user_with_forms_by_token_hash(&hash)
                            .await
                            .unwrap()
                            .is_some()
                        {
                            seen += 1;
                        }
                        tokio::task::yield_now().await;
                    }
                    seen
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        store.unassign_form(au.id, fi).await.unwrap();
        for _ in 0..5 {
            let (_, forms) = store
                .app_user_with_forms_by_token_hash(&hash)
                .await
                .unwrap()
                .unwrap();
            assert!(
                forms.is_empty(),
                "round {round}: a withdrawn form is gone at once"
            );
        }
        store.revoke_app_user(au.id).await.unwrap();
        for _ in 0..5 {
            assert!(
                store
                    .app_user_with_forms_by_token_hash(&hash)
                    .await
                    .unwrap()
                    .is_none(),
                "round {round}: a revoked token is refused at once"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in hammers {
            assert!(
                h.await.unwrap() > 0,
                "the lookups ran while the token was live"
            );
        }
    }
}

/// A second process on the same data directory (as `fieldvault restore --project ID
/// --into-live` is, beside a running server) changes collectors behind the first one's
/// token-lookup cache: the first sees it within the cache's one-second bound.
#[tokio::test]
async fn sqlite_token_lookups_see_another_process_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&dir.path().join("data"), None);
    let server = open(&settings, true).await.unwrap();
    let store = server.store.clone();
    let pid = new_project(&server, "P").await.project_id();
    let (f, _) = store
        .create_form(pid, &def("household", "1", &[]), true)
        .await
        .unwrap();
    let au = store
        .create_app_user(pid, "Enumerator", b"hash-other", None)
        .await
        .unwrap();
    store.assign_form(au.id, f.id).await.unwrap();
    for _ in 0..3 {
        let (_, forms) = store
            .app_user_with_forms_by_token_hash(b"hash-other")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(forms, vec![f.id]);
    }
    let other = open(&settings, false).await.unwrap();
    other.store.unassign_form(au.id, f.id).await.unwrap();
    other.store.revoke_app_user(au.id).await.unwrap();
    other.store.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert!(
        store
            .app_user_with_forms_by_token_hash(b"hash-other")
            .await
            .unwrap()
            .is_none(),
        "a revocation by another process is seen within a second"
    );
    store.close().await;
}

#[tokio::test]
async fn postgres_migrations_are_safe_when_instances_start_together() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            fieldvault_store::postgres::PgStore::connect(&url, 2)
                .await
                .map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Every instance sharing one database agrees on one master key check.
    let dir = tempfile::tempdir().unwrap();
    let key = fieldvault_crypto::keyring::encode_key_base64(&Key256::generate().unwrap());
    let mut s = settings(dir.path(), Some(&db.url));
    s.master_key = MasterKeySource::Inline(SecretString::new(key));
    let a = open(&s, true).await.unwrap();
    let b = open(&s, true).await.unwrap();
    assert_eq!(
        a.keyring.master().fingerprint(),
        b.keyring.master().fingerprint()
    );
    a.store.create_user(&user("shared")).await.unwrap();
    assert!(b.store.user_by_username("shared").await.unwrap().is_some());
    db.drop_db().await;
}

/// Every file under `dir`, recursively.
fn all_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn embedded_store_is_encrypted_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let marker = format!("MARKER-{}", fieldvault_testkit::unique_suffix());
    {
        let o = open(&settings(&data, None), true).await.unwrap();
        assert!(o.created_master_key);
        o.store.create_user(&user(&marker)).await.unwrap();
        let (dk, key) = o.keyring.new_data_key().unwrap();
        o.store
            .create_project(
                &NewProject {
                    name: marker.clone(),
                    description: Some(marker.clone()),
                    created_by: None,
                },
                &dk,
            )
            .await
            .unwrap();
        let body = Bytes::from(format!("<data>{marker}</data>").repeat(1000));
        o.blobs
            .put_bytes(&key, "p/1/blob", b"aad", body)
            .await
            .unwrap();
        // Check while the WAL still holds the fresh pages, then again after close.
        assert_no_marker(&data, &marker);
    }
    assert_no_marker(&data, &marker);
    let db = std::fs::read(data.join("fieldvault.db")).unwrap();
    assert!(
        !db.starts_with(b"SQLite format 3"),
        "no plaintext SQLite header"
    );
    // Opening it as a plain SQLite database fails.
    let plain = sqlx::sqlite::SqliteConnectOptions::new().filename(data.join("fieldvault.db"));
    use sqlx::ConnectOptions as _;
    let mut c = plain.connect().await.unwrap();
    assert!(
        sqlx::query("SELECT name FROM sqlite_master")
            .fetch_all(&mut c)
            .await
            .is_err()
    );
    // The key file is private.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(data.join("master.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

/// No file under `dir` contains `marker` in plaintext.
fn assert_no_marker(dir: &std::path::Path, marker: &str) {
    for f in all_files(dir) {
        // A file listed a moment ago may be gone (a temporary file renamed into place, the
        // SQLite shared-memory file): only what exists can hold plaintext.
        let bytes = match std::fs::read(&f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", f.display()),
        };
        assert!(
            !contains(&bytes, marker.as_bytes()),
            "marker in {}",
            f.display()
        );
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn digest_dir(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = all_files(dir)
        .into_iter()
        .filter(|p| !p.ends_with("fieldvault.lock"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn bad_keys_and_damaged_files_are_refused_without_changes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = settings(&data, None);
    {
        let o = open(&s, true).await.unwrap();
        o.store.create_user(&user("alice")).await.unwrap();
        o.store.close().await;
    }
    let before = digest_dir(&data);

    // Wrong key from the environment.
    let mut wrong = s.clone();
    let other = fieldvault_crypto::keyring::encode_key_base64(&Key256::generate().unwrap());
    wrong.master_key = MasterKeySource::Inline(SecretString::new(other));
    let e = open(&wrong, true).await.err().unwrap();
    assert!(matches!(e, StoreError::WrongKey(_)), "{e}");
    assert!(e.to_string().contains("does not open"), "{e}");
    // Malformed key.
    wrong.master_key = MasterKeySource::Inline(SecretString::from("not-a-key"));
    assert!(
        open(&wrong, true)
            .await
            .err()
            .unwrap()
            .to_string()
            .contains("FIELDVAULT_MASTER_KEY")
    );
    assert_eq!(digest_dir(&data), before);

    // Key file readable by others.
    use std::os::unix::fs::PermissionsExt as _;
    let kf = data.join("master.key");
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = open(&s, true).await.err().unwrap().to_string();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Missing key file next to existing data: never silently make a new key.
    let saved = std::fs::read(&kf).unwrap();
    std::fs::remove_file(&kf).unwrap();
    let e = open(&s, true).await.err().unwrap().to_string();
    assert!(e.contains("is missing"), "{e}");
    assert!(!kf.exists());
    std::fs::write(&kf, &saved).unwrap();
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A damaged database file.
    let dbf = data.join("fieldvault.db");
    let mut db = std::fs::read(&dbf).unwrap();
    for b in db.iter_mut().take(4096) {
        *b ^= 0x5a;
    }
    std::fs::write(&dbf, &db).unwrap();
    let damaged = digest_dir(&data);
    let e = open(&s, true).await.err().unwrap();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
    assert!(e.to_string().contains("damaged"), "{e}");
    assert_eq!(digest_dir(&data), damaged, "nothing modified");

    // A data dir that is a file.
    let file = dir.path().join("plainfile");
    std::fs::write(&file, b"x").unwrap();
    let e = open(&settings(&file, None), true)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
    // A data dir that does not exist, when creating is not allowed.
    let e = open(&settings(&dir.path().join("nope"), None), false)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

#[tokio::test]
async fn rotation_rewraps_without_rewriting_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = settings(&data, None);
    let (dk_id, key, old_fp) = {
        let o = open(&s, true).await.unwrap();
        let (dk, key) = o.keyring.new_data_key().unwrap();
        o.store
            .create_project(
                &NewProject {
                    name: "p".into(),
                    description: None,
                    created_by: None,
                },
                &dk,
            )
            .await
            .unwrap();
        o.blobs
            .put_bytes(&key, "p/blob", b"a", Bytes::from_static(b"payload"))
            .await
            .unwrap();
        (dk.id, key, o.keyring.master().fingerprint())
    };
    // While a server holds the data dir, rotation refuses.
    {
        let _running = open(&s, false).await.unwrap();
        let e = rotate_master_key(&s, RotateTo::RandomKey)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("stop it first"), "{e}");
    }
    // An interrupted rotation (the next key written, nothing else) blocks normal starts...
    let next = fieldvault_crypto::keyring::encode_key_base64(&Key256::generate().unwrap());
    std::fs::write(data.join("master.key.new"), format!("{next}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        data.join("master.key.new"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let e = open(&s, false).await.err().unwrap().to_string();
    assert!(e.contains("interrupted"), "{e}");
    // ...and the next rotate finishes it with that key.
    // "Without rewriting data": every stored ciphertext is byte-for-byte what it was.
    let blob_before = BlobStore::open(&BlobSettings::Local(data.join("blobs")))
        .unwrap()
        .get_raw("p/blob")
        .await
        .unwrap();
    let r = rotate_master_key(&s, RotateTo::RandomKey).await.unwrap();
    assert_eq!(r.data_keys, 1);
    assert_ne!(r.fingerprint, old_fp);
    assert!(r.new_inline_key.is_none());
    assert!(!data.join("master.key.new").exists());
    assert_eq!(
        MasterKey::from_base64(&next).unwrap().fingerprint(),
        r.fingerprint
    );
    let o = open(&s, false).await.unwrap();
    assert_eq!(o.keyring.master().fingerprint(), r.fingerprint);
    assert_eq!(o.keyring.data_key(&dk_id).await.unwrap(), key);
    assert_eq!(
        o.blobs.get_bytes(&key, "p/blob", b"a").await.unwrap(),
        b"payload"
    );
    assert_eq!(
        o.blobs.get_raw("p/blob").await.unwrap(),
        blob_before,
        "ciphertext untouched"
    );
}

async fn blob_behaviour(blobs: BlobStore) {
    let key = Key256::generate().unwrap();
    blobs.health().await.unwrap();
    // Small, empty and multi-part sizes round-trip.
    for (name, len) in [
        ("t/empty", 0usize),
        ("t/small", 1000),
        ("t/large", PART_LEN * 2 + 12_345),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let info = blobs
            .put_stream(
                &key,
                name,
                name.as_bytes(),
                futures_util::stream::iter(chunks),
            )
            .await
            .unwrap();
        assert_eq!(info.size, len as u64);
        assert_eq!(
            info.stored_size,
            fieldvault_crypto::stream::ciphertext_len(len as u64)
        );
        assert_eq!(
            blobs.get_bytes(&key, name, name.as_bytes()).await.unwrap(),
            data,
            "{name}"
        );
        let raw = blobs.get_raw(name).await.unwrap();
        assert_eq!(raw.len() as u64, info.stored_size);
        if len > 0 {
            assert!(
                !contains(&raw, &data[..len.min(64)]),
                "stored as ciphertext"
            );
        }
    }
    let raw = blobs.get_raw("t/large").await.unwrap().to_vec();
    let hdr = fieldvault_crypto::stream::HEADER_LEN;
    let full = fieldvault_crypto::stream::CHUNK_LEN + 16;

    // Tampered: one flipped byte.
    let mut flipped = raw.clone();
    flipped[hdr + 5000] ^= 0x80;
    blobs.put_raw("t/bad", Bytes::from(flipped)).await.unwrap();
    assert!(matches!(
        blobs.get_bytes(&key, "t/bad", b"t/large").await,
        Err(StoreError::Corrupt(_))
    ));
    // Reordered: two chunks swapped.
    let mut swapped = raw[..hdr].to_vec();
    swapped.extend_from_slice(&raw[hdr + full..hdr + 2 * full]);
    swapped.extend_from_slice(&raw[hdr..hdr + full]);
    swapped.extend_from_slice(&raw[hdr + 2 * full..]);
    blobs.put_raw("t/bad", Bytes::from(swapped)).await.unwrap();
    assert!(matches!(
        blobs.get_bytes(&key, "t/bad", b"t/large").await,
        Err(StoreError::Corrupt(_))
    ));
    // Truncated at a chunk boundary and mid-chunk.
    for cut in [hdr + 3 * full, raw.len() - 7] {
        blobs
            .put_raw("t/bad", Bytes::copy_from_slice(&raw[..cut]))
            .await
            .unwrap();
        assert!(matches!(
            blobs.get_bytes(&key, "t/bad", b"t/large").await,
            Err(StoreError::Corrupt(_))
        ));
    }
    // Moved: right bytes, wrong place.
    blobs
        .put_raw("t/bad", Bytes::from(raw.clone()))
        .await
        .unwrap();
    assert!(matches!(
        blobs.get_bytes(&key, "t/bad", b"t/bad").await,
        Err(StoreError::Corrupt(_))
    ));
    // Wrong key.
    let other = Key256::generate().unwrap();
    assert!(
        blobs
            .get_bytes(&other, "t/large", b"t/large")
            .await
            .is_err()
    );
    // Missing, and unsafe names.
    assert!(matches!(
        blobs.get_bytes(&key, "t/none", b"x").await,
        Err(StoreError::NotFound)
    ));
    for bad in ["", "/abs", "a/../b", "a//b"] {
        assert!(blobs.get_raw(bad).await.is_err(), "{bad}");
    }
    blobs.delete("t/small").await.unwrap();
    blobs.delete("t/small").await.unwrap();
    assert!(matches!(
        blobs.get_raw("t/small").await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn blobs_on_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    blob_behaviour(BlobStore::open(&BlobSettings::Local(dir.path().to_path_buf())).unwrap()).await;
}

#[tokio::test]
async fn blobs_on_s3_compatible_server() {
    let Some(s3) = S3Server::start().await else {
        return;
    };
    let blobs = BlobStore::open(&BlobSettings::S3(S3Settings {
        bucket: s3.bucket.clone(),
        prefix: "fieldvault/test".into(),
        endpoint: Some(s3.endpoint.clone()),
        region: "us-east-1".into(),
        access_key_id: s3.access_key.clone(),
        secret_access_key: SecretString::from(s3.secret_key.as_str()),
        allow_http: true,
    }))
    .unwrap();
    blob_behaviour(blobs).await;
}

#[tokio::test]
async fn sqlite_snapshot_is_encrypted_and_consistent() {
    use fieldvault_store::sqlite::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let key = Key256::generate().unwrap();
    let live = SqliteStore::open(&dir.path().join("live.db"), &key, true, 2)
        .await
        .unwrap();
    use fieldvault_store::Store as _;
    live.create_user(&user("snapshotted")).await.unwrap();
    let snap = dir.path().join("snap.db");
    live.snapshot_into(&snap).await.unwrap();
    let bytes = std::fs::read(&snap).unwrap();
    assert!(!contains(&bytes, b"snapshotted"), "snapshot is encrypted");
    assert!(!bytes.starts_with(b"SQLite format 3"));
    let copy = SqliteStore::open(&snap, &key, false, 1).await.unwrap();
    assert!(
        copy.user_by_username("snapshotted")
            .await
            .unwrap()
            .is_some()
    );
    let wrong = Key256::generate().unwrap();
    assert!(SqliteStore::open(&snap, &wrong, false, 1).await.is_err());
}

/// Project keys: a key change re-publishes forms (media carried over with the definition their
/// blobs were sealed for), rewrites drafts in place, keeps the key history, and is all or nothing.
async fn project_keys(settings: StorageSettings) {
    use fieldvault_store::KeyedDef;
    let opened = open(&settings, true).await.unwrap();
    let store = opened.store.clone();
    let p = new_project(&opened, "K").await;
    let pid = p.project_id();
    let (f, d1) = store
        .create_form(pid, &def("keyed", "1", &["logo.png"]), true)
        .await
        .unwrap();
    store
        .set_form_attachment(d1.id, "logo.png", Some("image/png"), "blob-1", "md5:aa", 3)
        .await
        .unwrap();
    let (g, g_draft) = store
        .create_form(pid, &def("drafted", "4", &[]), false)
        .await
        .unwrap();
    assert!(store.project_public_key(p.id).await.unwrap().is_none());

    let keyed = |form_id, old_def_id, version: &str, key: Option<&str>| KeyedDef {
        form_id,
        old_def_id,
        def: NewFormDef {
            public_key: key.map(str::to_owned),
            ..def(
                if form_id == f.id { "keyed" } else { "drafted" },
                version,
                &["logo.png"],
            )
        },
    };
    let out = store
        .change_project_key(
            p.id,
            Some("KEY-A"),
            None,
            &[keyed(f.id, d1.id, "1[encrypted:a]", Some("KEY-A"))],
            &[keyed(g.id, g_draft.id, "4", Some("KEY-A"))],
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    let f2 = store.form(pid, "keyed").await.unwrap().unwrap();
    assert_eq!(f2.published_def_id, Some(out[0].id));
    let media = store.form_attachments(out[0].id).await.unwrap();
    assert_eq!(media[0].blob_name.as_deref(), Some("blob-1"));
    assert_eq!(
        media[0].sealed_def_id(),
        d1.id,
        "sealed for the original definition"
    );
    let g2 = store.form(pid, "drafted").await.unwrap().unwrap();
    assert_eq!(
        g2.draft_def_id,
        Some(g_draft.id),
        "a draft is rewritten in place"
    );
    assert_eq!(
        store
            .form_def(g_draft.id)
            .await
            .unwrap()
            .unwrap()
            .public_key
            .as_deref(),
        Some("KEY-A")
    );
    assert_eq!(
        store
            .project_public_key(p.id)
            .await
            .unwrap()
            .unwrap()
            .public_key,
        "KEY-A"
    );

    // A stale definition id (someone published meanwhile): nothing changes.
    match store
        .change_project_key(
            p.id,
            Some("KEY-B"),
            None,
            &[keyed(f.id, d1.id, "1[encrypted:b]", Some("KEY-B"))],
            &[],
        )
        .await
    {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .project_public_key(p.id)
            .await
            .unwrap()
            .unwrap()
            .public_key,
        "KEY-A"
    );
    // An already published version: refused, nothing changes.
    match store
        .change_project_key(
            p.id,
            None,
            None,
            &[keyed(f.id, out[0].id, "1[encrypted:a]", None)],
            &[],
        )
        .await
    {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{other:?}"),
    }
    // Off: the key is retired and listed in the history.
    store
        .change_project_key(
            p.id,
            None,
            None,
            &[keyed(f.id, out[0].id, "1[unencrypted:c]", None)],
            &[],
        )
        .await
        .unwrap();
    assert!(store.project_public_key(p.id).await.unwrap().is_none());
    let history = store.project_public_keys(p.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].retired_at.is_some());
    let f3 = store.form(pid, "keyed").await.unwrap().unwrap();
    let media = store
        .form_attachments(f3.published_def_id.unwrap())
        .await
        .unwrap();
    assert_eq!(
        media[0].sealed_def_id(),
        d1.id,
        "still the original definition"
    );
}

#[tokio::test]
async fn project_keys_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    project_keys(settings(&dir.path().join("data"), None)).await;
}

#[tokio::test]
async fn project_keys_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    project_keys(settings(dir.path(), Some(&db.url))).await;
    db.drop_db().await;
}

#[tokio::test]
async fn data_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    submission_data(settings(&dir.path().join("data"), None)).await;
}

#[tokio::test]
async fn data_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    submission_data(settings(dir.path(), Some(&db.url))).await;
    db.drop_db().await;
}

/// Bulk reads, review states, soft deletion, restore and purge: the same on both backends.
async fn submission_data(settings: StorageSettings) {
    let opened = open(&settings, true).await.unwrap();
    let store = opened.store.clone();
    let p = new_project(&opened, "P").await;
    let (f, d) = store
        .create_form(p.project_id(), &def("census", "1", &[]), true)
        .await
        .unwrap();
    let (other, od) = store
        .create_form(p.project_id(), &def("other", "1", &[]), true)
        .await
        .unwrap();
    let (pi, fi, di) = (p.id, f.id, d.id);
    for i in 0..5 {
        let mut s = sub(pi, fi, di, &format!("uuid:{i}"), &format!("<d{i}/>"));
        if i == 1 {
            s.attachments = vec![att("photo.jpg", "blob-1")];
        }
        store.ingest(&[s]).await.unwrap();
    }
    store
        .ingest(&[sub(pi, other.id, od.id, "uuid:x", "<x/>")])
        .await
        .unwrap();
    let mut edit = sub(pi, fi, di, "uuid:1b", "<d1b/>");
    edit.deprecated_id = Some("uuid:1".into());
    edit.form_version = "2".into();
    store.ingest(&[edit]).await.unwrap();

    // Keyset pages, newest first, only this form.
    let mut q = PageQuery {
        form_id: fi,
        deleted: Deleted::Exclude,
        after: Cursor::START,
        limit: 2,
        with_xml: true,
    };
    let mut seen = Vec::new();
    loop {
        let page = store.submission_page(&q).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        q.after = page.last().unwrap().cursor();
        seen.extend(page);
    }
    let ids: Vec<&str> = seen.iter().map(|r| r.instance_id.as_str()).collect();
    assert_eq!(ids, vec!["uuid:4", "uuid:3", "uuid:2", "uuid:1", "uuid:0"]);
    let one = seen.iter().find(|r| r.instance_id == "uuid:1").unwrap();
    assert_eq!(one.current_instance_id, "uuid:1b");
    assert_eq!(one.xml_sealed, b"<d1b/>");
    assert_eq!(one.edits, 1);
    assert_eq!(one.form_version, "1", "the version first submitted");
    assert_eq!(one.attachments_expected, 1);
    assert_eq!(one.attachments_present, 1, "carried forward by the edit");
    assert_eq!(one.review_state, "edited");
    let zero = seen.iter().find(|r| r.instance_id == "uuid:0").unwrap();
    assert_eq!((zero.edits, zero.attachments_present), (0, 0));
    assert_eq!(zero.device_id.as_deref(), Some("collect:test"));
    let meta_only = store
        .submission_page(&PageQuery {
            with_xml: false,
            after: Cursor::START,
            limit: 100,
            ..q
        })
        .await
        .unwrap();
    assert_eq!(meta_only.len(), 5);
    assert!(meta_only.iter().all(|r| r.xml_sealed.is_empty()));
    // Offsets: the cursor of the n-th live row after a position, as a page would reach it.
    for (n, row) in meta_only.iter().enumerate() {
        let at = store
            .live_cursor_after(fi, Cursor::START, n as i64 + 1)
            .await
            .unwrap();
        assert_eq!(at, Some(row.cursor()), "row {n}");
    }
    let from_second = store
        .live_cursor_after(fi, meta_only[1].cursor(), 2)
        .await
        .unwrap();
    assert_eq!(from_second, Some(meta_only[3].cursor()));
    assert_eq!(
        store.live_cursor_after(fi, Cursor::START, 6).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .live_cursor_after(fi, meta_only[2].cursor(), 0)
            .await
            .unwrap(),
        Some(meta_only[2].cursor())
    );
    // Attachment slots of several versions at once, by version.
    let versions: Vec<i64> = seen.iter().map(|r| r.version_id).collect();
    let slots = store.attachments_of_versions(&versions).await.unwrap();
    let mut slot_versions: Vec<i64> = slots.iter().map(|a| a.version_id).collect();
    assert!(slot_versions.is_sorted());
    slot_versions.sort_unstable();
    let mut want = versions.clone();
    want.sort_unstable();
    assert_eq!(slot_versions, want, "one expected photo per version");
    let received: Vec<i64> = slots
        .iter()
        .filter(|a| a.blob_name.is_some())
        .map(|a| a.version_id)
        .collect();
    assert_eq!(received, vec![one.version_id]);
    assert!(store.attachments_of_versions(&[]).await.unwrap().is_empty());
    let many: Vec<i64> = (0..1200)
        .map(|i| one.version_id + 10_000 + i)
        .chain([one.version_id])
        .collect();
    assert_eq!(store.attachments_of_versions(&many).await.unwrap().len(), 1);

    // Review states.
    let two = store
        .submission_record(fi, "uuid:2", false)
        .await
        .unwrap()
        .unwrap();
    assert!(two.xml_sealed.is_empty());
    store.set_review_state(two.id, "approved").await.unwrap();
    let two = store
        .submission_record(fi, "uuid:2", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(two.review_state, "approved");
    assert_eq!(two.xml_sealed, b"<d2/>");
    assert!(two.updated_at.is_some());
    assert!(matches!(
        store.set_review_state(999_999, "approved").await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .submission_record(fi, "uuid:x", false)
            .await
            .unwrap()
            .is_none()
    );

    // Soft delete, restore, purge.
    let one_id = one.id;
    store
        .set_submission_deleted(one_id, Some(now_ms() - 10_000))
        .await
        .unwrap();
    assert!(matches!(
        store.set_submission_deleted(one_id, Some(now_ms())).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_review_state(one_id, "approved").await,
        Err(StoreError::NotFound)
    ));
    let page = |deleted| PageQuery {
        form_id: fi,
        deleted,
        after: Cursor::START,
        limit: 100,
        with_xml: false,
    };
    assert_eq!(
        store
            .submission_page(&page(Deleted::Exclude))
            .await
            .unwrap()
            .len(),
        4
    );
    let trash = store.submission_page(&page(Deleted::Only)).await.unwrap();
    assert_eq!(trash.len(), 1);
    assert_eq!(trash[0].instance_id, "uuid:1");
    // A deleted row takes no place in an offset: the 4th live row is the oldest, the 5th none.
    let live = store
        .submission_page(&page(Deleted::Exclude))
        .await
        .unwrap();
    assert_eq!(
        store.live_cursor_after(fi, Cursor::START, 4).await.unwrap(),
        Some(live[3].cursor())
    );
    assert_eq!(
        store.live_cursor_after(fi, Cursor::START, 5).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .submission_page(&page(Deleted::Include))
            .await
            .unwrap()
            .len(),
        5
    );
    bulk_reader_agrees_with_pages(store.as_ref(), fi).await;
    // Versions received without a fit check count as not fitting; a form whose current versions
    // all fit has none, whatever its deleted or superseded versions were.
    assert!(store.form_has_unfitted(fi).await.unwrap());
    let (fit_form, fit_def) = store
        .create_form(p.project_id(), &def("fits", "1", &[]), true)
        .await
        .unwrap();
    assert!(!store.form_has_unfitted(fit_form.id).await.unwrap());
    let mut fitting = sub(pi, fit_form.id, fit_def.id, "uuid:f1", "<f1/>");
    fitting.fits_form = Some(true);
    store.ingest(&[fitting]).await.unwrap();
    assert!(!store.form_has_unfitted(fit_form.id).await.unwrap());
    let mut edit = sub(pi, fit_form.id, fit_def.id, "uuid:f1b", "<f1b/>");
    edit.deprecated_id = Some("uuid:f1".into());
    store.ingest(&[edit]).await.unwrap();
    assert!(
        store.form_has_unfitted(fit_form.id).await.unwrap(),
        "the edit was not checked"
    );
    let mut again = sub(pi, fit_form.id, fit_def.id, "uuid:f1c", "<f1c/>");
    again.deprecated_id = Some("uuid:f1b".into());
    again.fits_form = Some(true);
    store.ingest(&[again]).await.unwrap();
    assert!(!store.form_has_unfitted(fit_form.id).await.unwrap());
    let mut misfit = sub(pi, fit_form.id, fit_def.id, "uuid:f2", "<f2/>");
    misfit.fits_form = Some(false);
    store.ingest(&[misfit]).await.unwrap();
    assert!(store.form_has_unfitted(fit_form.id).await.unwrap());
    store.set_submission_deleted(one_id, None).await.unwrap();
    assert!(matches!(
        store.set_submission_deleted(one_id, None).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .submission_page(&page(Deleted::Only))
            .await
            .unwrap()
            .len(),
        0
    );
    store
        .set_submission_deleted(one_id, Some(now_ms() - 10_000))
        .await
        .unwrap();
    let before_counts = store.counts().await.unwrap();
    let none = store
        .purge_deleted_submissions(now_ms() - 20_000, 100)
        .await
        .unwrap();
    assert_eq!(none, Purged::default(), "not yet past retention");
    assert_eq!(store.counts().await.unwrap(), before_counts);
    let purged = store
        .purge_deleted_submissions(now_ms(), 100)
        .await
        .unwrap();
    assert_eq!(purged.submissions, vec![(fi, "uuid:1".to_owned())]);
    assert_eq!(purged.blobs, vec!["blob-1".to_owned()]);
    assert!(
        store
            .submission_record(fi, "uuid:1", true)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.submission(fi, "uuid:1b").await.unwrap().is_none());
    assert_eq!(
        store
            .submission_page(&page(Deleted::Include))
            .await
            .unwrap()
            .len(),
        4
    );
    // The instanceID is free again once purged (Central: purged means gone).
    let r = store
        .ingest(&[sub(pi, fi, di, "uuid:1", "<again/>")])
        .await
        .unwrap();
    assert!(matches!(r.outcomes[0], IngestOutcome::Created { .. }));
}

/// Account lifecycle: invites, reset links, flags, browser sessions, account deletion.
/// The embedded store's blocking reader returns what the pooled pages return, for every deletion
/// mode, and cuts ranges exactly at the cursors it reports (PostgreSQL has no reader).
async fn bulk_reader_agrees_with_pages(store: &dyn fieldvault_store::Store, fi: i64) {
    // The live count (on SQLite, from the bulk readers' position reader) counts what the pages
    // list.
    let live = store
        .submission_page(&PageQuery {
            form_id: fi,
            deleted: Deleted::Exclude,
            after: Cursor::START,
            limit: 1000,
            with_xml: false,
        })
        .await
        .unwrap();
    assert_eq!(
        store.kobo_count(fi).await.unwrap(),
        (live.len() as i64, live.iter().map(|r| r.created_at).max()),
        "the count counts what the pages list"
    );
    assert_eq!(store.kobo_count(i64::MAX).await.unwrap(), (0, None));
    let Some(reader) = store.page_reader() else {
        assert_eq!(store.backend(), fieldvault_store::Backend::Postgres);
        return;
    };
    let mut reader = reader.unwrap();
    for deleted in [Deleted::Exclude, Deleted::Only, Deleted::Include] {
        let q = PageQuery {
            form_id: fi,
            deleted,
            after: Cursor::START,
            limit: 100,
            with_xml: true,
        };
        let pages = store.submission_page(&q).await.unwrap();
        let read = reader.range(&q, None).unwrap();
        let ids = |rs: &[fieldvault_store::SubmissionRecord]| {
            rs.iter()
                .map(|r| (r.id, r.version_id, r.edits, r.xml_sealed.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&read), ids(&pages), "{deleted:?}");
        assert!(read.iter().all(|r| !r.xml_sealed.is_empty()));
        for n in 1..=pages.len() {
            let at = reader
                .cursor_after(&PageQuery {
                    limit: n as i64,
                    ..q
                })
                .unwrap();
            assert_eq!(at, Some(pages[n - 1].cursor()), "{deleted:?} row {n}");
            // A range from the start to that cursor holds exactly the first n rows; also when
            // no limit cuts it (read oldest first and turned around: the same order).
            let upto = reader.range(&q, at).unwrap();
            assert_eq!(ids(&upto), ids(&pages[..n]));
            let whole = PageQuery {
                limit: i64::MAX,
                ..q
            };
            assert_eq!(ids(&reader.range(&whole, at).unwrap()), ids(&pages[..n]));
        }
        let whole = PageQuery {
            limit: i64::MAX,
            ..q
        };
        assert_eq!(
            ids(&reader.range(&whole, None).unwrap()),
            ids(&pages),
            "{deleted:?}"
        );
        let past = PageQuery {
            limit: pages.len() as i64 + 1,
            ..q
        };
        assert_eq!(reader.cursor_after(&past).unwrap(), None);
        let meta = reader
            .range(
                &PageQuery {
                    with_xml: false,
                    ..q
                },
                None,
            )
            .unwrap();
        assert!(meta.iter().all(|r| r.xml_sealed.is_empty()));
        assert_eq!(meta.len(), pages.len());
    }
}

async fn lifecycle(settings: StorageSettings) {
    use fieldvault_store::NewInvite;
    let opened = open(&settings, true).await.unwrap();
    let store = opened.store.clone();
    let keyring = opened.keyring.clone();
    let now = fieldvault_store::now_ms();

    // Invites: single use, expiring, and a taken username leaves the invite unused.
    let taken = store.create_user(&user("taken")).await.unwrap();
    assert!(!taken.must_reset_password && !taken.require_2fa);
    let inv = store
        .create_invite(&NewInvite {
            token_hash: vec![1; 32],
            created_by: Some(taken.user_id()),
            expires_at: now + 60_000,
            username: Some("fixed".into()),
            email: None,
        })
        .await
        .unwrap();
    assert_eq!(inv.username.as_deref(), Some("fixed"));
    assert!(store.invite_by_hash(&[2; 32], now).await.unwrap().is_none());
    assert!(
        store
            .invite_by_hash(&[1; 32], now + 60_000)
            .await
            .unwrap()
            .is_none()
    );
    let found = store.invite_by_hash(&[1; 32], now).await.unwrap().unwrap();
    assert_eq!(found.id, inv.id);
    assert!(matches!(
        store
            .create_user_with_invite(inv.id, now, &user("taken"))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(store.invite_by_hash(&[1; 32], now).await.unwrap().is_some());
    let mut nu = user("fixed");
    nu.must_reset_password = true;
    let fixed = store
        .create_user_with_invite(inv.id, now, &nu)
        .await
        .unwrap();
    assert!(fixed.must_reset_password);
    assert!(store.invite_by_hash(&[1; 32], now).await.unwrap().is_none());
    assert!(matches!(
        store
            .create_user_with_invite(inv.id, now, &user("again"))
            .await,
        Err(StoreError::NotFound)
    ));
    let late = store
        .create_invite(&NewInvite {
            token_hash: vec![3; 32],
            created_by: None,
            expires_at: now - 1,
            username: None,
            email: None,
        })
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_user_with_invite(late.id, now, &user("late"))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(store.user_by_username("late").await.unwrap().is_none());

    // Reset links: single use, expiring; using one sets the hash, clears the flag, voids the
    // others and ends every session.
    store
        .create_session(fixed.id, &[10; 32], now + 60_000)
        .await
        .unwrap();
    let r1 = store
        .create_password_reset(
            fixed.user_id(),
            &[11; 32],
            Some(taken.user_id()),
            now + 60_000,
        )
        .await
        .unwrap();
    store
        .create_password_reset(fixed.user_id(), &[12; 32], None, now + 60_000)
        .await
        .unwrap();
    assert!(
        store
            .password_reset_by_hash(&[11; 32], now + 60_000)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .password_reset_by_hash(&[11; 32], now)
            .await
            .unwrap()
            .unwrap()
            .id,
        r1.id
    );
    let who = store
        .complete_password_reset(r1.id, now, "new-hash")
        .await
        .unwrap();
    assert_eq!(who, fixed.user_id());
    let after = store.user_by_id(fixed.user_id()).await.unwrap().unwrap();
    assert_eq!(after.password_hash, "new-hash");
    assert!(!after.must_reset_password);
    assert!(
        store
            .session_by_hash(&[10; 32], now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.complete_password_reset(r1.id, now, "again").await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .password_reset_by_hash(&[12; 32], now)
            .await
            .unwrap()
            .is_none()
    );

    // Forced reset ends sessions; a change keeps only the caller's session.
    store
        .create_session(fixed.id, &[13; 32], now + 60_000)
        .await
        .unwrap();
    store
        .set_must_reset_password(fixed.user_id(), true)
        .await
        .unwrap();
    assert!(
        store
            .session_by_hash(&[13; 32], now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .user_by_id(fixed.user_id())
            .await
            .unwrap()
            .unwrap()
            .must_reset_password
    );
    store
        .create_session(fixed.id, &[14; 32], now + 60_000)
        .await
        .unwrap();
    store
        .create_session(fixed.id, &[15; 32], now + 60_000)
        .await
        .unwrap();
    assert_eq!(
        store
            .change_password(fixed.user_id(), "h2", Some(&[14; 32]))
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .session_by_hash(&[14; 32], now)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .session_by_hash(&[15; 32], now)
            .await
            .unwrap()
            .is_none()
    );
    let after = store.user_by_id(fixed.user_id()).await.unwrap().unwrap();
    assert!(!after.must_reset_password && after.password_hash == "h2");
    store.set_require_2fa(fixed.user_id(), true).await.unwrap();
    assert!(
        store
            .user_by_id(fixed.user_id())
            .await
            .unwrap()
            .unwrap()
            .require_2fa
    );
    assert!(matches!(
        store.set_require_2fa(UserId(9999), true).await,
        Err(StoreError::NotFound)
    ));

    // Browser sessions carry the cookie flag and a last-seen time that only moves forward.
    let b = store
        .create_browser_session(fixed.id, &[16; 32], now + 60_000)
        .await
        .unwrap();
    assert!(b.cookie && b.last_seen_at >= now);
    store
        .touch_session(&[16; 32], b.last_seen_at + 5_000)
        .await
        .unwrap();
    store
        .touch_session(&[16; 32], b.last_seen_at + 1_000)
        .await
        .unwrap();
    let s = store
        .session_by_hash(&[16; 32], now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.last_seen_at, b.last_seen_at + 5_000);
    let bearer = store
        .create_session(fixed.id, &[17; 32], now + 60_000)
        .await
        .unwrap();
    assert!(!bearer.cookie);

    // Account deletion: the sole-managed project goes with its data key; a shared one stays.
    assert_eq!(store.count_active_superusers().await.unwrap(), 0);
    let mut admin = user("root");
    admin.superuser = true;
    store.create_user(&admin).await.unwrap();
    assert_eq!(store.count_active_superusers().await.unwrap(), 1);
    let (dk1, _) = keyring.new_data_key().unwrap();
    let solo = store
        .create_project(
            &NewProject {
                name: "solo".into(),
                description: None,
                created_by: Some(fixed.user_id()),
            },
            &dk1,
        )
        .await
        .unwrap();
    let (dk2, _) = keyring.new_data_key().unwrap();
    let shared = store
        .create_project(
            &NewProject {
                name: "shared".into(),
                description: None,
                created_by: Some(fixed.user_id()),
            },
            &dk2,
        )
        .await
        .unwrap();
    store
        .set_project_role(solo.project_id(), fixed.user_id(), "manager")
        .await
        .unwrap();
    store
        .set_project_role(shared.project_id(), fixed.user_id(), "manager")
        .await
        .unwrap();
    store
        .set_project_role(shared.project_id(), taken.user_id(), "manager")
        .await
        .unwrap();
    let sole = store.sole_managed_projects(fixed.user_id()).await.unwrap();
    assert_eq!(sole.iter().map(|p| p.id).collect::<Vec<_>>(), vec![solo.id]);
    store
        .create_api_token(fixed.id, "t", &[18; 32], "data:read", None)
        .await
        .unwrap();
    let gone = store.delete_account(fixed.user_id(), now).await.unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].data_key_id.as_deref(), Some(dk1.id.as_str()));
    assert!(store.data_key(&dk1.id).await.unwrap().is_none());
    assert!(store.data_key(&dk2.id).await.unwrap().is_some());
    let solo_after = store.project(solo.project_id()).await.unwrap().unwrap();
    assert!(solo_after.deleted_at.is_some() && solo_after.data_key_id.is_none());
    assert!(
        store
            .project(shared.project_id())
            .await
            .unwrap()
            .unwrap()
            .deleted_at
            .is_none()
    );
    assert_eq!(
        store
            .project_role(shared.project_id(), fixed.user_id())
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .session_by_hash(&[16; 32], now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .api_token_by_hash(&[18; 32], now)
            .await
            .unwrap()
            .is_none()
    );
    let row = store.user_by_id(fixed.user_id()).await.unwrap().unwrap();
    assert!(!row.active && row.email.is_none() && row.username.starts_with("deleted:"));
    assert!(store.user_by_username("fixed").await.unwrap().is_none());
    assert!(
        store
            .list_users(None, 1000, 0)
            .await
            .unwrap()
            .iter()
            .all(|u| u.id != fixed.id),
        "a deleted account is not listed"
    );
    assert!(
        store
            .list_users(Some("deleted:"), 1000, 0)
            .await
            .unwrap()
            .is_empty()
    );
    // A deleted account cannot be reactivated, deleted again, or given a password.
    assert!(matches!(
        store.set_user_active(fixed.user_id(), true).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_account(fixed.user_id(), now).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.change_password(fixed.user_id(), "x", None).await,
        Err(StoreError::NotFound)
    ));
    // With its co-manager gone, the shared project is now sole-managed by the other account.
    let sole = store.sole_managed_projects(taken.user_id()).await.unwrap();
    assert_eq!(
        sole.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![shared.id]
    );
    store.close().await;
}

/// The KoboToolbox API's store functions: records, bulk deletion and validation statuses (all or
/// none), `kobo-api` token rotation, export tasks, redaction rewrites and scrubbing.
async fn kobo_store(settings: StorageSettings) {
    use fieldvault_store::{NewKoboExport, VersionRewrite};
    let opened = open(&settings, true).await.unwrap();
    let store = opened.store.clone();
    let owner = store.create_user(&user("kobo-owner")).await.unwrap();
    let (dk, _) = opened.keyring.new_data_key().unwrap();
    let p = store
        .create_project(
            &NewProject {
                name: "K".into(),
                description: None,
                created_by: Some(owner.user_id()),
            },
            &dk,
        )
        .await
        .unwrap();
    let (f, d) = store
        .create_form(p.project_id(), &def("kobo", "1", &[]), true)
        .await
        .unwrap();
    let mut first = sub(p.id, f.id, d.id, "uuid:k1", "<one/>");
    first.submitter_user_id = Some(owner.id);
    first.attachments = vec![att("photo.jpg", "blobs/k1-photo")];
    let mut edit = sub(p.id, f.id, d.id, "uuid:k1b", "<one-edited/>");
    edit.deprecated_id = Some("uuid:k1".into());
    edit.instance_name = Some("Ana".into());
    let got = store
        .ingest(&[
            first,
            sub(p.id, f.id, d.id, "uuid:k2", "<two/>"),
            sub(p.id, f.id, d.id, "uuid:k3", "<three/>"),
            edit,
        ])
        .await
        .unwrap();
    let ids: Vec<i64> = got
        .outcomes
        .iter()
        .take(3)
        .map(|o| match o {
            IngestOutcome::Created { submission_id } => *submission_id,
            other => panic!("{other:?}"),
        })
        .collect();

    // Records: current versions in id order, paged by id; the submitter's name joined.
    let page1 = store.kobo_records(f.id, 0, 2).await.unwrap();
    assert_eq!(page1.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(page1[0].instance_id, "uuid:k1b");
    assert_eq!(page1[0].root_instance_id, "uuid:k1");
    assert_eq!(page1[0].xml_sealed, b"<one-edited/>");
    assert_eq!(page1[0].submitted_by.as_deref(), Some("kobo-owner"));
    assert_eq!(page1[1].submitted_by, None);
    let page2 = store.kobo_records(f.id, page1[1].id, 2).await.unwrap();
    assert_eq!(page2.iter().map(|r| r.id).collect::<Vec<_>>(), ids[2..]);
    // The same pages by position, as `/data/?start=` asks for them.
    let at = |o, l| store.kobo_records_at(f.id, o, l);
    let by_pos: Vec<i64> = at(1, 5).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(by_pos, ids[1..]);
    let first = at(0, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].instance_id, "uuid:k1b");
    assert_eq!(first[0].xml_sealed, b"<one-edited/>");
    assert!(at(3, 5).await.unwrap().is_empty());
    assert!(
        store
            .kobo_records_at(f.id + 1000, 0, 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.kobo_count(f.id).await.unwrap().0, 3);
    assert!(store.kobo_record(f.id, ids[1]).await.unwrap().is_some());
    assert!(
        store
            .kobo_record(f.id + 1000, ids[1])
            .await
            .unwrap()
            .is_none()
    );

    // Validation statuses: all or none.
    assert!(matches!(
        store
            .kobo_set_validation(
                f.id,
                &[ids[0], 999_999],
                Some("validation_status_on_hold"),
                Some("a"),
                5_000
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .kobo_record(f.id, ids[0])
            .await
            .unwrap()
            .unwrap()
            .validation_status,
        None
    );
    assert_eq!(
        store
            .kobo_set_validation(
                f.id,
                &[ids[0], ids[0], ids[1]],
                Some("validation_status_approved"),
                Some("a"),
                5_000
            )
            .await
            .unwrap(),
        2
    );
    let r = store.kobo_record(f.id, ids[0]).await.unwrap().unwrap();
    assert_eq!(
        r.validation_status.as_deref(),
        Some("validation_status_approved")
    );
    assert_eq!(
        (r.validation_by.as_deref(), r.validation_at),
        (Some("a"), Some(5_000))
    );
    store
        .kobo_set_validation(f.id, &[ids[0]], None, Some("a"), 6_000)
        .await
        .unwrap();
    let r = store.kobo_record(f.id, ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (r.validation_status, r.validation_by, r.validation_at),
        (None, None, None)
    );

    // Deletion: all or none, then gone from records and counts.
    assert!(matches!(
        store.kobo_delete(f.id, &[ids[2], 999_999]).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.kobo_count(f.id).await.unwrap().0, 3);
    assert_eq!(store.kobo_delete(f.id, &[ids[2]]).await.unwrap(), 1);
    assert_eq!(store.kobo_count(f.id).await.unwrap().0, 2);
    assert!(store.kobo_record(f.id, ids[2]).await.unwrap().is_none());
    // A deleted row takes no position.
    let live: Vec<i64> = store
        .kobo_records_at(f.id, 1, 5)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(live, ids[1..2]);
    assert!(matches!(
        store.kobo_delete(f.id, &[ids[2]]).await,
        Err(StoreError::NotFound)
    ));

    // Tokens: only the newest `keep` of that name stay.
    for i in 0..4u8 {
        store
            .kobo_issue_token(owner.id, "kobo-api", &[i; 32], "data:read data:write", 2)
            .await
            .unwrap();
    }
    let names: Vec<Vec<u8>> = store
        .api_tokens(owner.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.name == "kobo-api")
        .map(|t| t.token_hash)
        .collect();
    assert_eq!(names, vec![vec![3u8; 32], vec![2u8; 32]]);
    assert!(
        store
            .api_token_by_hash(&[0u8; 32], 0)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .api_token_by_hash(&[3u8; 32], 0)
            .await
            .unwrap()
            .is_some()
    );

    // Export tasks.
    let t = store
        .create_kobo_export(&NewKoboExport {
            uid: "eTASK".into(),
            project_id: p.id,
            form_id: f.id,
            user_id: owner.id,
            settings: "{}".into(),
            expires_at: 10_000,
        })
        .await
        .unwrap();
    assert_eq!(t.status, "created");
    store
        .finish_kobo_export(t.id, "complete", None, Some(("exports/eTASK", "x.csv", 12)))
        .await
        .unwrap();
    let t2 = store.kobo_export("eTASK").await.unwrap().unwrap();
    assert_eq!(
        (t2.status.as_str(), t2.size, t2.file_name.as_deref()),
        ("complete", Some(12), Some("x.csv"))
    );
    assert!(t2.completed_at.is_some());
    assert_eq!(store.kobo_exports(f.id, owner.id).await.unwrap().len(), 1);
    assert!(
        store
            .kobo_exports(f.id, owner.id + 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.kobo_form_exports(f.id).await.unwrap().len(), 1);
    assert!(
        store
            .kobo_form_exports(f.id + 1000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.expired_kobo_exports(9_999).await.unwrap().is_empty());
    assert_eq!(store.expired_kobo_exports(10_000).await.unwrap().len(), 1);
    store.delete_kobo_export(t.id).await.unwrap();
    assert!(store.kobo_export("eTASK").await.unwrap().is_none());

    // Saved export settings: named uniquely per form, renamed, deleted.
    let setting = |uid: &str, name: &str| fieldvault_store::NewKoboExportSetting {
        uid: uid.into(),
        project_id: p.id,
        form_id: f.id,
        name: name.into(),
        settings: r#"{"type":"csv"}"#.into(),
        created_by: Some(owner.id),
    };
    let es = store
        .create_kobo_export_setting(&setting("esONE", "Weekly"))
        .await
        .unwrap();
    assert_eq!(
        (es.name.as_str(), es.created_by),
        ("Weekly", Some(owner.id))
    );
    match store
        .create_kobo_export_setting(&setting("esTWO", "Weekly"))
        .await
    {
        Err(StoreError::Conflict { constraint }) => {
            assert_eq!(constraint, "kobo_export_settings_form_name_key")
        }
        other => panic!("expected a name conflict, got {other:?}"),
    }
    let two = store
        .create_kobo_export_setting(&setting("esTWO", "Daily"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .update_kobo_export_setting(two.id, "Weekly", "{}")
            .await,
        Err(StoreError::Conflict { .. })
    ));
    store
        .update_kobo_export_setting(two.id, "Monthly", r#"{"type":"xls"}"#)
        .await
        .unwrap();
    let got = store.kobo_export_setting("esTWO").await.unwrap().unwrap();
    assert_eq!(
        (got.name.as_str(), got.settings.as_str()),
        ("Monthly", r#"{"type":"xls"}"#)
    );
    assert_eq!(
        store
            .kobo_export_settings(f.id)
            .await
            .unwrap()
            .iter()
            .map(|r| r.uid.as_str())
            .collect::<Vec<_>>(),
        ["esONE", "esTWO"]
    );
    store.delete_kobo_export_setting(es.id).await.unwrap();
    assert!(store.kobo_export_setting("esONE").await.unwrap().is_none());

    // Redaction: every version rewritten in place, slots emptied, blob names returned once.
    let versions = store.submission_versions(ids[0]).await.unwrap();
    assert_eq!(versions.len(), 2);
    let mut slots = Vec::new();
    for v in &versions {
        for a in store.submission_attachments(v.id).await.unwrap() {
            assert_eq!(a.blob_name.as_deref(), Some("blobs/k1-photo"));
            slots.push(a.id);
        }
    }
    assert_eq!(slots.len(), 2);
    let rewrites: Vec<VersionRewrite> = versions
        .iter()
        .map(|v| VersionRewrite {
            version_id: v.id,
            xml_sealed: b"<redacted/>".to_vec(),
            xml_sha256: vec![9; 32],
            xml_size: 11,
            clear_instance_name: true,
        })
        .collect();
    assert_eq!(
        store.redact(&rewrites, &slots).await.unwrap(),
        vec!["blobs/k1-photo".to_string()]
    );
    for v in store.submission_versions(ids[0]).await.unwrap() {
        assert_eq!(v.xml_sealed, b"<redacted/>");
        assert_eq!(
            (v.xml_sha256, v.xml_size, v.instance_name),
            (vec![9; 32], 11, None)
        );
        for a in store.submission_attachments(v.id).await.unwrap() {
            assert_eq!((a.blob_name, a.size, a.sha256), (None, None, None));
        }
    }
    store.scrub().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn kobo_store_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    kobo_store(settings(&dir.path().join("data"), None)).await;
}

#[tokio::test]
async fn kobo_store_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    kobo_store(settings(dir.path(), Some(&db.url))).await;
    db.drop_db().await;
}

/// Budget counters, restrictions (one in force per subject), notices, and audit retention: the
/// same on both backends.
async fn limits(settings: StorageSettings) {
    use fieldvault_store::audit_chain::{Verifier, verify};
    use fieldvault_store::{BudgetDelta, NewAudit};
    let opened = open(&settings, true).await.unwrap();
    let store = opened.store.clone();
    let d = |k: &str, w: i64, n: i64| BudgetDelta {
        key: k.into(),
        window_start: w,
        attempts: n,
    };
    assert_eq!(
        store
            .budget_add(&[d("token:1", 0, 5), d("user:1", 0, 2)])
            .await
            .unwrap(),
        vec![5, 2]
    );
    assert_eq!(
        store.budget_add(&[d("token:1", 0, 3)]).await.unwrap(),
        vec![8]
    );
    store
        .budget_add(&[d("token:1", 60, 9), d("token:1", 120, 1)])
        .await
        .unwrap();
    assert_eq!(store.budget_get("token:1", 0).await.unwrap(), 8);
    assert_eq!(store.budget_get("token:9", 0).await.unwrap(), 0);
    assert_eq!(store.budget_windows_over("token:1", 0, 8).await.unwrap(), 2);
    assert_eq!(
        store.budget_windows_over("token:1", 60, 8).await.unwrap(),
        1
    );

    let admin = store
        .create_user(&NewUser {
            superuser: true,
            ..user("boss")
        })
        .await
        .unwrap();
    let owner = store.create_user(&user("owner")).await.unwrap();
    assert_eq!(store.superuser_ids().await.unwrap(), vec![admin.id]);
    let r = store
        .restrict("token:1", "read_only", "why", &[admin.id, owner.id], 1000)
        .await
        .unwrap()
        .unwrap();
    // One in force per subject.
    assert!(
        store
            .restrict("token:1", "suspended", "again", &[admin.id], 1001)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.active_restrictions().await.unwrap(), vec![r.clone()]);
    let n = store.notices(owner.id, 10).await.unwrap();
    assert_eq!(n.len(), 1);
    assert!(n[0].message.contains("token:1") && n[0].read_at.is_none());
    assert_eq!(store.mark_notices_read(owner.id, 2000).await.unwrap(), 1);
    assert_eq!(
        store.notices(owner.id, 10).await.unwrap()[0].read_at,
        Some(2000)
    );
    let lifted = store
        .lift_restriction(r.id, "user:boss", 3000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (lifted.lifted_at, lifted.lifted_by.as_deref()),
        (Some(3000), Some("user:boss"))
    );
    assert!(
        store
            .lift_restriction(r.id, "user:boss", 3001)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.active_restrictions().await.unwrap().is_empty());
    // Lifting forgets the subject's counters; a new restriction may follow.
    assert_eq!(store.budget_get("token:1", 0).await.unwrap(), 0);
    assert!(
        store
            .restrict("token:1", "suspended", "again", &[], 4000)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.restrictions(10).await.unwrap().len(), 2);
    assert_eq!(store.budget_prune(100).await.unwrap(), 1); // user:1 at window 0
    assert_eq!(store.budget_get("user:1", 0).await.unwrap(), 0);

    // A project's history: its own targets and those below it, newest first; not project 11's.
    for target in ["project:1", "project:1/form:x", "project:11", "other"] {
        store
            .append_audit(&NewAudit {
                actor: "cli:t".into(),
                action: "test.target".into(),
                target: Some(target.into()),
                details: "{}".into(),
            })
            .await
            .unwrap();
    }
    let h = store
        .audit_entries_for_project(1, i64::MAX, 10)
        .await
        .unwrap();
    let targets: Vec<_> = h.iter().map(|r| r.target.clone().unwrap()).collect();
    assert_eq!(targets, vec!["project:1/form:x", "project:1"]);
    let older = store
        .audit_entries_for_project(1, h[0].seq, 10)
        .await
        .unwrap();
    assert_eq!(older.len(), 1);

    // Audit retention: prune all but the newest, then the chain verifies from the anchor.
    for i in 0..4 {
        store
            .append_audit(&NewAudit {
                actor: "cli:t".into(),
                action: "test.entry".into(),
                target: None,
                details: format!("{{\"i\":{i}}}"),
            })
            .await
            .unwrap();
    }
    let head = store.audit_head().await.unwrap();
    let before = head.as_ref().unwrap().0;
    let deleted = store.audit_prune(i64::MAX).await.unwrap();
    assert_eq!(deleted, u64::try_from(before - 1).unwrap());
    let anchor = store.audit_anchor().await.unwrap();
    assert_eq!(anchor.as_ref().unwrap().0, before - 1);
    let rows = store.audit_entries(0, 100).await.unwrap();
    assert_eq!(rows.len(), 1);
    let mut v = Verifier::from_anchor(anchor);
    for r in &rows {
        v.push(r);
    }
    assert_eq!(
        v.finish(head.clone()),
        fieldvault_store::audit_chain::Verified::Intact { entries: 1 }
    );
    // Without the anchor, the kept entry does not follow from the start.
    assert!(matches!(
        verify(&rows, head),
        fieldvault_store::audit_chain::Verified::Broken { .. }
    ));
    assert_eq!(store.audit_prune(i64::MAX).await.unwrap(), 0);
    store.close().await;
}

#[tokio::test]
async fn limits_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    limits(settings(&dir.path().join("data"), None)).await;
}

#[tokio::test]
async fn limits_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    limits(settings(dir.path(), Some(&db.url))).await;
    db.drop_db().await;
}

/// Leadership: on PostgreSQL one holder at a time, released when dropped; the embedded store
/// always leads.
#[tokio::test]
async fn leadership_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = open(&settings(dir.path(), Some(&db.url)), true)
        .await
        .unwrap();
    let b = open(&settings(dir.path(), Some(&db.url)), true)
        .await
        .unwrap();
    let mut lead = a.store.try_lead("job").await.unwrap().expect("first leads");
    assert!(b.store.try_lead("job").await.unwrap().is_none());
    assert!(b.store.try_lead("other job").await.unwrap().is_some());
    assert!(lead.still_held().await);
    drop(lead);
    // The connection closes with the guard; the lock goes with it.
    let mut got = None;
    for _ in 0..50 {
        got = b.store.try_lead("job").await.unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(got.is_some(), "leadership passes on");
    a.store.close().await;
    b.store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn leadership_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&settings(&dir.path().join("data"), None), true)
        .await
        .unwrap();
    assert!(a.store.try_lead("job").await.unwrap().is_some());
    assert!(a.store.try_lead("job").await.unwrap().is_some());
    a.store.close().await;
}

/// Every row of every table of an embedded database, as text (`quote()` of each value), sorted:
/// two databases with the same dump hold the same data.
async fn dump(
    path: &std::path::Path,
    key: &Key256,
) -> std::collections::BTreeMap<String, Vec<String>> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::str::FromStr as _;
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .pragma(
            "key",
            format!("\"x'{}'\"", fieldvault_crypto::random::to_hex(key.expose())),
        );
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN \
         ('fv_change_journal', 'fv_journal_state', '_sqlx_migrations', 'auth_throttle', \
         'api_budget', 'sqlite_sequence') ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for t in tables {
        let cols: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                .bind(&t)
                .fetch_all(&pool)
                .await
                .unwrap();
        let expr = cols
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let mut rows: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {expr} FROM \"{t}\"")))
                .fetch_all(&pool)
                .await
                .unwrap();
        rows.sort();
        out.insert(t, rows);
    }
    pool.close().await;
    out
}

/// The change journal (point-in-time recovery of the embedded store) records every change every
/// behaviour of the store makes: a copy taken before, with the journal replayed onto it, holds
/// exactly what the live database holds after — users, projects, forms, submissions with edits,
/// deletions and purges, tokens, lifecycle, key changes, KoboToolbox exports, limits.
#[tokio::test]
async fn change_journal_replays_every_behaviour_exactly() {
    use fieldvault_store::Store as _;
    use fieldvault_store::sqlite::SqliteStore;
    type Behaviour =
        fn(StorageSettings) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;
    let behaviours: [(&str, Behaviour); 7] = [
        ("suite", |s| Box::pin(suite(s))),
        ("forms_and_submissions", |s| {
            Box::pin(forms_and_submissions(s))
        }),
        ("submission_data", |s| Box::pin(submission_data(s))),
        ("lifecycle", |s| Box::pin(lifecycle(s))),
        ("project_keys", |s| Box::pin(project_keys(s))),
        ("kobo_store", |s| Box::pin(kobo_store(s))),
        ("limits", |s| Box::pin(limits(s))),
    ];
    for (name, behaviour) in behaviours {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(&dir.path().join("data"), None);
        let opened = open(&s, true).await.unwrap();
        let master = opened.keyring.master().clone();
        opened.store.close().await;
        drop(opened);
        let key = fieldvault_store::open::embedded_database_key(&s.data_dir, &master).unwrap();
        let live = fieldvault_store::open::open_embedded(&s.data_dir, &master)
            .await
            .unwrap();
        let start = live.journal_enable().await.unwrap();
        assert_eq!(start.timeline.len(), 16, "a new timeline");
        let copy = dir.path().join("copy.db");
        live.snapshot_into(&copy).await.unwrap();

        behaviour(s.clone()).await;

        live.journal_mark().await.unwrap();
        let mut entries = Vec::new();
        loop {
            let after = entries
                .last()
                .map_or(0, |e: &fieldvault_store::change_journal::Entry| e.seq);
            let got = live.journal_read(after, 1 << 30).await.unwrap();
            if got.is_empty() {
                break;
            }
            entries.extend(got);
        }
        assert!(entries.len() > 10, "{name}: {} entries", entries.len());
        assert!(entries.last().unwrap().is_mark());
        let pos = live.journal_position().await.unwrap();
        assert_eq!(pos.timeline, start.timeline);
        assert_eq!(pos.seq, entries.last().unwrap().seq);
        live.close().await;

        let replayed = SqliteStore::open(&copy, &key, false, 1).await.unwrap();
        let applied = replayed.journal_replay(&entries).await.unwrap();
        assert!(applied > 0);
        let after = replayed.journal_position().await.unwrap();
        assert_eq!(
            after.timeline, "",
            "{name}: a replayed copy has no timeline of its own yet"
        );
        replayed.close().await;
        let (want, got) = (
            dump(&s.data_dir.join("fieldvault.db"), &key).await,
            dump(&copy, &key).await,
        );
        for (table, rows) in &want {
            assert_eq!(
                got.get(table),
                Some(rows),
                "{name}: table {table} differs after the replay"
            );
        }
        assert_eq!(want.len(), got.len());
    }
}

/// Turning the journal off drops its triggers and what it held; on again starts a new timeline.
#[tokio::test]
async fn change_journal_off_and_on_starts_a_new_timeline() {
    use fieldvault_store::Store as _;
    let dir = tempfile::tempdir().unwrap();
    let key = Key256::generate().unwrap();
    let db = fieldvault_store::sqlite::SqliteStore::open(&dir.path().join("j.db"), &key, true, 2)
        .await
        .unwrap();
    let first = db.journal_enable().await.unwrap();
    assert_eq!(
        db.journal_enable().await.unwrap().timeline,
        first.timeline,
        "kept on restart"
    );
    db.create_user(&user("journaled")).await.unwrap();
    assert!(db.journal_mark().await.unwrap());
    assert!(
        !db.journal_mark().await.unwrap(),
        "no change since the last mark: no new mark"
    );
    let e = db.journal_read(0, 1 << 20).await.unwrap();
    assert_eq!(e.len(), 2);
    assert!(
        e[0].stmt
            .as_deref()
            .unwrap()
            .starts_with("INSERT INTO \"users\"")
    );
    assert!(
        !format!("{e:?}").contains("journaled"),
        "Debug shows no row values"
    );
    db.journal_forget(e[1].seq).await.unwrap();
    assert!(db.journal_read(0, 1 << 20).await.unwrap().is_empty());

    db.journal_disable().await.unwrap();
    db.create_user(&user("unjournaled")).await.unwrap();
    assert!(
        !db.journal_mark().await.unwrap(),
        "off: nothing is journaled"
    );
    let again = db.journal_enable().await.unwrap();
    assert_ne!(again.timeline, first.timeline);
    assert!(again.seq >= 2, "sequence numbers are never reused");
}

/// Closing the embedded store waits for the bulk readers on loan, hands out none afterwards and
/// keeps none: a connection still open, or being closed, while the process exits crashed the
/// server after a clean shutdown.
#[tokio::test]
async fn sqlite_close_waits_for_readers_and_hands_out_none() {
    use fieldvault_store::{BulkReadStore as _, Store as _};
    let dir = tempfile::tempdir().unwrap();
    let key = Key256::generate().unwrap();
    let store = std::sync::Arc::new(
        fieldvault_store::sqlite::SqliteStore::open(&dir.path().join("c.db"), &key, true, 2)
            .await
            .unwrap(),
    );
    let mut reader = store
        .page_reader()
        .expect("the embedded store reads in bulk")
        .unwrap();
    let q = PageQuery {
        form_id: 1,
        deleted: Deleted::Exclude,
        after: Cursor::START,
        limit: 10,
        with_xml: true,
    };
    assert!(reader.range(&q, None).unwrap().is_empty());
    let closing = {
        let store = store.clone();
        tokio::spawn(async move { store.close().await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!closing.is_finished(), "close waits for the reader on loan");
    assert!(
        store.page_reader().unwrap().is_err(),
        "no reader is handed out once closing"
    );
    assert!(
        reader.cursor_after(&q).is_err(),
        "position lookups stop too"
    );
    drop(reader);
    tokio::time::timeout(std::time::Duration::from_secs(5), closing)
        .await
        .expect("close ends once the reader is back")
        .unwrap();
}
