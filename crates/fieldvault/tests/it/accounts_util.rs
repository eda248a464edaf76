//! Helpers shared by the account-lifecycle tests.

use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client};

/// Signs in for a bearer token; panics unless it succeeds.
pub async fn bearer(srv: &Server, name: &str, password: &str) -> String {
    let r = client()
        .post(srv.url("/v1/sessions"))
        .json(&json!({"email": name, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{name} signs in");
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Status and code of a sign-in attempt.
pub async fn try_login(srv: &Server, name: &str, password: &str) -> (u16, String) {
    let r = client()
        .post(srv.url("/v1/sessions"))
        .json(&json!({"email": name, "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or("").to_owned())
}

/// The caller's account id.
pub async fn my_id(srv: &Server, token: &str) -> i64 {
    let me: Value = client()
        .get(srv.url("/v1/users/current"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    me["id"].as_i64().unwrap()
}

/// The account id of `name` (signed in with the test password).
pub async fn id_of(srv: &Server, name: &str) -> i64 {
    let me: Value = client()
        .get(srv.url("/v1/users/current"))
        .basic_auth(name, Some(crate::harness::PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    me["id"].as_i64().unwrap()
}

/// The audit actions so far, oldest first, with their targets.
pub async fn audit(srv: &Server, admin: &str) -> Vec<(String, String)> {
    let log: Value = client()
        .get(srv.url("/v1/audits"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Whether the audit log holds `action` on `target`.
pub fn audited(log: &[(String, String)], action: &str, target: &str) -> bool {
    log.iter().any(|(a, t)| a == action && t == target)
}

/// The current TOTP code for a base32 secret.
pub fn totp_now(secret_b32: &str) -> String {
    let secret = crate::harness::base32_decode(secret_b32);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    fieldvault_crypto::totp::code(&secret, now).unwrap()
}

/// Enrols and confirms TOTP for the holder of `token`; returns (secret, recovery codes).
pub async fn enrol(srv: &Server, token: &str) -> (String, Vec<String>) {
    let c = client();
    let e: Value = c
        .post(srv.url("/v1/users/current/2fa"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = e["secret"].as_str().unwrap().to_owned();
    let r: Value = c
        .post(srv.url("/v1/users/current/2fa/confirm"))
        .bearer_auth(token)
        .json(&json!({"code": totp_now(&secret)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes = r["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (secret, codes)
}

/// The default test password.
pub const PW: &str = PASSWORD;
/// A second password that passes the policy.
pub const PW2: &str = "Tamarind-Okapi-Glacier-41";
