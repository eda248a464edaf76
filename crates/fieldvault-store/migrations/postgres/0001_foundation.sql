-- Foundation schema (PostgreSQL). Times are Unix milliseconds (UTC), as in the SQLite schema, so
-- both backends share one set of row types and one test suite.
CREATE TABLE fv_meta (
    k TEXT PRIMARY KEY NOT NULL,
    v BYTEA NOT NULL
);

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL,
    email TEXT,
    password_hash TEXT NOT NULL,
    superuser BOOLEAN NOT NULL DEFAULT FALSE,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE data_keys (
    id TEXT PRIMARY KEY NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE projects (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    data_key_id TEXT REFERENCES data_keys (id),
    created_by BIGINT REFERENCES users (id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT,
    archived BOOLEAN NOT NULL DEFAULT FALSE,
    deleted_at BIGINT
);
