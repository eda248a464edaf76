//! Deleting one's own account over real HTTP: proof by password (and second factor), projects
//! managed by nobody else go with it and their data keys are destroyed, tokens and sessions end,
//! the last administrator cannot delete itself.

use fieldvault_store::{MasterKeySource, StorageSettings};
use serde_json::{Value, json};

use crate::accounts_util::{PW, audit, bearer, enrol, my_id};
use crate::harness::{Server, admin_session, client, create_user};

async fn delete_me(srv: &Server, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .delete(srv.url("/v1/users/current"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn project(srv: &Server, token: &str, name: &str) -> i64 {
    let p: Value = client()
        .post(srv.url("/v1/projects"))
        .bearer_auth(token)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    p["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_shreds_its_own_projects() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    create_user(dir.path(), &[], "bob", false);
    let c = client();
    let alice = bearer(&srv, "alice", PW).await;
    let bob = bearer(&srv, "bob", PW).await;
    let bob_id = my_id(&srv, &bob).await;
    let solo = project(&srv, &alice, "Alice alone").await;
    let shared = project(&srv, &alice, "Shared").await;
    let r = c
        .post(srv.url(&format!(
            "/v1/projects/{shared}/assignments/manager/{bob_id}"
        )))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "bob co-manages the shared project");
    let t: Value = c
        .post(srv.url("/v1/tokens"))
        .bearer_auth(&alice)
        .json(&json!({"name": "script", "scopes": ["data:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_token = t["token"].as_str().unwrap().to_owned();

    // Proof: the password, and the second factor once enrolled.
    let (s, _) = delete_me(&srv, &alice, json!({"password": "wrong password!"})).await;
    assert_eq!(s, 401);
    let (_, recovery) = enrol(&srv, &alice).await;
    let (s, b) = delete_me(&srv, &alice, json!({"password": PW})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (401, Some("auth.second_factor_required"))
    );
    let (s, b) = delete_me(&srv, &alice, json!({"password": PW, "code": recovery[0]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["projectsDeleted"], json!([solo]));

    // Her credentials are gone; her own project is gone; the shared one stays with bob.
    for t in [&alice, &api_token] {
        let r = c
            .get(srv.url("/v1/users/current"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(
        crate::accounts_util::try_login(&srv, "alice", PW).await.0,
        401
    );
    let r = c
        .get(srv.url(&format!("/v1/projects/{shared}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let admin = admin_session(&srv, dir.path(), &[], "admin").await;
    let log = audit(&srv, &admin).await;
    assert!(log.iter().any(|(a, _)| a == "user.delete"), "{log:?}");
    assert!(srv.stop());

    // In the store: the solo project is deleted and its data key destroyed (crypto-shredding);
    // the shared project keeps its key; the account row is anonymised.
    let opened = fieldvault_store::open(
        &StorageSettings {
            data_dir: dir.path().join("fieldvault-data"),
            database_url: None,
            blobs: None,
            master_key: MasterKeySource::File(dir.path().join("fieldvault-data/master.key")),
            max_connections: 2,
        },
        false,
    )
    .await
    .unwrap();
    let store = opened.store.clone();
    let p = store
        .project(fieldvault_core::ProjectId(solo))
        .await
        .unwrap()
        .unwrap();
    assert!(p.deleted_at.is_some() && p.data_key_id.is_none());
    let p = store
        .project(fieldvault_core::ProjectId(shared))
        .await
        .unwrap()
        .unwrap();
    let key = p.data_key_id.unwrap();
    assert!(store.data_key(&key).await.unwrap().is_some());
    assert!(store.user_by_username("alice").await.unwrap().is_none());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_administrator_cannot_delete_itself() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "root", true);
    let first = bearer(&srv, "root", PW).await;
    let (_, codes) = enrol(&srv, &first).await;
    let (s, b) = delete_me(&srv, &first, json!({"password": PW, "code": codes[0]})).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("user.last_superuser")));
    // With a second administrator, the first may go.
    create_user(dir.path(), &[], "root2", true);
    let (s, b) = delete_me(&srv, &first, json!({"password": PW, "code": codes[1]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        crate::accounts_util::try_login(&srv, "root", PW).await.0,
        401
    );
}
