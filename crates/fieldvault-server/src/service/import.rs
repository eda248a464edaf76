//! Moving users over from KoboToolbox (M1): accounts exported from its Django `auth_user` table
//! keep their PBKDF2 password hashes, so people sign in with the passwords they already have (and
//! get a stronger hash at that first sign-in). Hashes in any other format cannot be checked here;
//! those accounts are created with a forced password reset (sign-in answers
//! `auth.password_reset_required`), and an operator sets a password (`fieldvault user
//! set-password`) or an administrator sends a reset link (`POST /v1/admin/users/{id}/password-reset`).
//!
//! Export from KoboToolbox's database (the `kobocat`/`kpi` PostgreSQL):
//! ```sql
//! \copy (SELECT username, email, password, is_superuser, is_active, date_joined
//!        FROM auth_user ORDER BY id) TO 'kobo-users.csv' WITH CSV HEADER
//! ```

use fieldvault_core::account::{validate_email, validate_username};
use fieldvault_core::{Actor, CoreError, Resource, Verb, authorize};
use fieldvault_crypto::password;
use fieldvault_store::{NewUser, Store, StoreError};
use serde::Deserialize;

use super::ServiceError;

/// Most accounts one import takes (a bound on input size; split bigger exports).
pub const MAX_RECORDS: usize = 100_000;
/// The stored hash of an account that must get a new password before it can sign in. It never
/// parses as a hash, so no password matches it.
pub const RESET_REQUIRED: &str = "!reset-required";

/// One exported account.
#[derive(Debug, Clone, Deserialize)]
pub struct KoboUser {
    /// Login name.
    pub username: String,
    /// E-mail (may be empty).
    #[serde(default)]
    pub email: Option<String>,
    /// Django's `password` column.
    pub password: String,
    /// Site administrator.
    #[serde(default, deserialize_with = "flag")]
    pub is_superuser: bool,
    /// Active account.
    #[serde(default = "yes", deserialize_with = "flag")]
    pub is_active: bool,
}

fn yes() -> bool {
    true
}

/// psql writes booleans as `t`/`f`; JSON exports use `true`/`false`.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
        Number(i64),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Number(n) => n != 0,
        Flag::Text(s) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "t" | "true" | "1" | "yes"
        ),
    })
}

/// Parses a CSV (with header) or JSON (array of objects) export.
pub fn parse(text: &str) -> Result<Vec<KoboUser>, CoreError> {
    let records: Vec<KoboUser> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text)
            .map_err(|e| CoreError::invalid("file", format!("not a JSON array of users: {e}")))?
    } else {
        csv::Reader::from_reader(text.as_bytes())
            .deserialize()
            .enumerate()
            .map(|(i, r)| {
                r.map_err(|e| CoreError::invalid("file", format!("CSV line {}: {e}", i + 2)))
            })
            .collect::<Result<_, _>>()?
    };
    if records.len() > MAX_RECORDS {
        return Err(CoreError::invalid(
            "file",
            format!("at most {MAX_RECORDS} accounts per import"),
        ));
    }
    Ok(records)
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Accounts that sign in with their KoboToolbox password.
    pub created: Vec<String>,
    /// Accounts created locked until a new password is set.
    pub reset_required: Vec<String>,
    /// Accounts not imported, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Creates the accounts. Existing usernames are left alone.
pub async fn import_kobo(
    store: &dyn Store,
    actor: &Actor,
    records: Vec<KoboUser>,
) -> Result<ImportReport, ServiceError> {
    authorize(actor, Verb::UserCreate, Resource::Site)?;
    let mut report = ImportReport::default();
    for r in records {
        if let Err(e) = validate_username(&r.username) {
            report.skipped.push((r.username, e.to_string()));
            continue;
        }
        let email = r
            .email
            .filter(|e| !e.trim().is_empty() && validate_email(e.trim()).is_ok());
        let usable = password::is_supported(&r.password);
        let created = store
            .create_user(&NewUser {
                username: r.username.clone(),
                email,
                password_hash: if usable {
                    r.password.clone()
                } else {
                    RESET_REQUIRED.to_owned()
                },
                superuser: r.is_superuser,
                active: r.is_active,
                // A hash that cannot be checked here: the account signs in only after a reset
                // link or an operator sets a new password (and says so at sign-in).
                must_reset_password: !usable,
            })
            .await;
        match created {
            Ok(_) => {
                super::audit::record(
                    store,
                    super::audit::actor_name(actor, None),
                    "user.import",
                    Some(format!("user:{}", r.username)),
                    serde_json::json!({ "superuser": r.is_superuser, "active": r.is_active, "passwordKept": usable }),
                )
                .await?;
                if usable {
                    report.created.push(r.username);
                } else {
                    report.reset_required.push(r.username);
                }
            }
            Err(StoreError::Conflict { .. }) => report
                .skipped
                .push((r.username, "the username exists already".into())),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// Sets a user's password (operators and administrators), ending the user's sessions and
/// clearing a forced reset.
pub async fn set_password(
    store: &dyn Store,
    actor: &Actor,
    username: &str,
    new: fieldvault_crypto::SecretString,
) -> Result<(), ServiceError> {
    authorize(actor, Verb::UserCreate, Resource::Site)?;
    let user = store
        .user_by_username(username)
        .await?
        .ok_or(ServiceError::NotFound)?;
    super::users::check_password_policy(&new, &user.username, user.email.as_deref())?;
    let hash =
        tokio::task::spawn_blocking(move || password::hash(&new, password::DEFAULT_ITERATIONS))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
    // One transaction: new hash, forced reset cleared, every session ended.
    store.change_password(user.user_id(), &hash, None).await?;
    super::audit::record(
        store,
        super::audit::actor_name(actor, None),
        "user.password.set",
        Some(format!("user:{}", user.username)),
        serde_json::json!({}),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_exports() {
        let csv = "username,email,password,is_superuser,is_active,date_joined\n\
                   ana,ana@example.org,pbkdf2_sha256$1000$s$aGFzaA==,f,t,2020-01-01 00:00:00+00\n\
                   root,,bcrypt_sha256$$2b$12$x,t,f,2020-01-01\n";
        let r = parse(csv).unwrap();
        assert_eq!(r.len(), 2);
        assert!(!r[0].is_superuser && r[0].is_active);
        assert!(r[1].is_superuser && !r[1].is_active);
        let json =
            r#"[{"username":"bo","email":null,"password":"x","is_superuser":true,"is_active":1}]"#;
        let r = parse(json).unwrap();
        assert!(r[0].is_superuser && r[0].is_active);
        assert!(parse("username\n\"unclosed").is_err());
        assert!(parse("[{\"nope\":1}]").is_err());
    }
}
