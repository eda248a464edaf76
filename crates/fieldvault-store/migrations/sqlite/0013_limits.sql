-- API budgets shared by every instance using this database: attempts per key and fixed window.
-- Each instance counts locally and adds its counts here about once a second (service::budget).
CREATE TABLE api_budget (
    k TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    PRIMARY KEY (k, window_start)
);
CREATE INDEX api_budget_window ON api_budget (window_start);

-- Automatic (and lifted) restrictions of tokens, accounts and collectors after sustained excess.
CREATE TABLE restrictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    mode TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    lifted_at BIGINT,
    lifted_by TEXT
);
-- At most one restriction in force per subject, even when two instances decide together.
CREATE UNIQUE INDEX restrictions_active ON restrictions (subject) WHERE lifted_at IS NULL;

-- Notices shown to an account (restrictions of its tokens, of itself, and for administrators
-- of anyone).
CREATE TABLE notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    read_at BIGINT
);
CREATE INDEX notices_user ON notices (user_id, id);

-- Audit retention: the seq and hash of the newest entry deleted by retention. Verification starts
-- there, so the entries kept stay provably unaltered.
ALTER TABLE audit_head ADD COLUMN anchor_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_head ADD COLUMN anchor_hash BLOB;
