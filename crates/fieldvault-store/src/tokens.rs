//! Login sessions and API tokens. Both are looked up by the SHA-256 of the presented token, so a
//! copy of the database yields no usable credential.

use async_trait::async_trait;

use crate::StoreError;

/// A login session.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    /// Store id.
    pub id: i64,
    /// The account.
    pub user_id: i64,
    /// SHA-256 of the bearer token.
    pub token_hash: Vec<u8>,
    /// Creation time.
    pub created_at: i64,
    /// Expiry time (the absolute timeout).
    pub expires_at: i64,
    /// A browser session carried in a cookie (idle timeout and CSRF apply), not a bearer token.
    pub cookie: bool,
    /// Last request seen with this session (for the idle timeout), updated coarsely.
    pub last_seen_at: i64,
}

impl std::fmt::Debug for SessionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionRow({}, user {})", self.id, self.user_id)
    }
}

/// A named, scoped API token.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiTokenRow {
    /// Store id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// Name given by the owner.
    pub name: String,
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// Space-separated scope names.
    pub scopes: String,
    /// Creation time.
    pub created_at: i64,
    /// Optional expiry.
    pub expires_at: Option<i64>,
    /// Last use.
    pub last_used_at: Option<i64>,
    /// Address of the last use.
    pub last_used_ip: Option<String>,
    /// Revocation time.
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for ApiTokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokenRow")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Sessions and API tokens.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a session.
    async fn create_session(
        &self,
        user_id: i64,
        token_hash: &[u8],
        expires_at: i64,
    ) -> Result<SessionRow, StoreError>;

    /// A session that has not expired at `now`.
    async fn session_by_hash(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<SessionRow>, StoreError>;

    /// Ends a session; `false` when there was none.
    async fn delete_session(&self, token_hash: &[u8]) -> Result<bool, StoreError>;

    /// An account's sessions that have not expired, newest first (at most 200).
    async fn user_sessions(&self, user_id: i64, now: i64) -> Result<Vec<SessionRow>, StoreError>;

    /// Ends one session of an account by id; `false` when the account has no such session.
    async fn delete_user_session(&self, user_id: i64, id: i64) -> Result<bool, StoreError>;

    /// Ends every session of an account ("log out everywhere", password change).
    async fn delete_user_sessions(&self, user_id: i64) -> Result<u64, StoreError>;

    /// Stores an API token.
    async fn create_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &[u8],
        scopes: &str,
        expires_at: Option<i64>,
    ) -> Result<ApiTokenRow, StoreError>;

    /// An account's API tokens, revoked ones included, newest first.
    async fn api_tokens(&self, user_id: i64) -> Result<Vec<ApiTokenRow>, StoreError>;

    /// A usable token (not revoked, not expired at `now`).
    async fn api_token_by_hash(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<ApiTokenRow>, StoreError>;

    /// Revokes one of an account's tokens; `NotFound` if it has no such active token.
    async fn revoke_api_token(&self, user_id: i64, id: i64) -> Result<(), StoreError>;

    /// Records a use (time and client address).
    async fn touch_api_token(&self, id: i64, now: i64, ip: &str) -> Result<(), StoreError>;
}
