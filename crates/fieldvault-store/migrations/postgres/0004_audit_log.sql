-- The append-only, hash-chained audit log (M5). Each entry's hash covers the previous entry's
-- hash and a canonical encoding of the entry, so an edited, deleted or reordered entry breaks the
-- chain. audit_head holds the newest hash; appends lock it so concurrent writers cannot fork the
-- chain.

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    details TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);

CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY NOT NULL,
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
CREATE UNIQUE INDEX audit_log_seq_key ON audit_log (seq);
