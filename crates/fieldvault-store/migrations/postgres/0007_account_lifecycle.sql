-- Account lifecycle (issue #5 part A): forced password reset and per-account 2FA requirement,
-- account deletion, browser (cookie) sessions with an idle timeout, invite links for sign-up and
-- admin-issued password-reset links. Invite and reset tokens are stored only as SHA-256.

ALTER TABLE users ADD COLUMN must_reset_password BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN require_2fa BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN deleted_at BIGINT;

ALTER TABLE sessions ADD COLUMN cookie BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE sessions ADD COLUMN last_seen_at BIGINT NOT NULL DEFAULT 0;

CREATE TABLE invites (
    id BIGSERIAL PRIMARY KEY,
    token_hash BYTEA NOT NULL,
    created_by BIGINT REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    used_by BIGINT REFERENCES users (id),
    username TEXT,
    email TEXT
);
CREATE UNIQUE INDEX invites_token_hash_key ON invites (token_hash);

CREATE TABLE password_resets (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id),
    token_hash BYTEA NOT NULL,
    created_by BIGINT REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE UNIQUE INDEX password_resets_token_hash_key ON password_resets (token_hash);
CREATE INDEX password_resets_user ON password_resets (user_id);
