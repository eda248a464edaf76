-- KoboToolbox-compatible API (specs/kobo-api-v2.md): validation statuses of submissions and
-- asynchronous export tasks, whose files live encrypted in the blob store until they expire.

ALTER TABLE submissions ADD COLUMN validation_status TEXT;
ALTER TABLE submissions ADD COLUMN validation_by TEXT;
ALTER TABLE submissions ADD COLUMN validation_at BIGINT;

CREATE TABLE kobo_exports (
    id BIGSERIAL PRIMARY KEY,
    uid TEXT NOT NULL,
    project_id BIGINT NOT NULL REFERENCES projects (id),
    form_id BIGINT NOT NULL REFERENCES forms (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    settings TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    blob_name TEXT,
    file_name TEXT,
    size BIGINT,
    created_at BIGINT NOT NULL,
    completed_at BIGINT,
    expires_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX kobo_exports_uid_key ON kobo_exports (uid);
CREATE INDEX kobo_exports_form_user ON kobo_exports (form_id, user_id);
