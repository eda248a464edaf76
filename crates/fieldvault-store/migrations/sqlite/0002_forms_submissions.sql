-- Forms, their versions (defs) and media; collectors (app users) and their form assignments;
-- project roles; submissions with every version kept, and their attachments.

CREATE TABLE project_roles (
    project_id BIGINT NOT NULL REFERENCES projects (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);

CREATE TABLE forms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects (id),
    xml_form_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open',
    anonymous BOOLEAN NOT NULL DEFAULT FALSE,
    published_def_id BIGINT,
    draft_def_id BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX forms_project_xml_form_id_key ON forms (project_id, xml_form_id);

CREATE TABLE form_defs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    form_id BIGINT NOT NULL REFERENCES forms (id),
    version TEXT NOT NULL,
    title TEXT,
    xml BLOB NOT NULL,
    md5 TEXT NOT NULL,
    public_key TEXT,
    binary_fields TEXT NOT NULL DEFAULT '[]',
    published_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX form_defs_published_version_key ON form_defs (form_id, version)
    WHERE published_at IS NOT NULL;

CREATE TABLE form_attachments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    form_def_id BIGINT NOT NULL REFERENCES form_defs (id),
    name TEXT NOT NULL,
    content_type TEXT,
    blob_name TEXT,
    md5 TEXT,
    size BIGINT
);
CREATE UNIQUE INDEX form_attachments_def_name_key ON form_attachments (form_def_id, name);

CREATE TABLE app_users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects (id),
    display_name TEXT NOT NULL,
    token_hash BLOB NOT NULL,
    created_by BIGINT REFERENCES users (id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX app_users_token_hash_key ON app_users (token_hash);

CREATE TABLE form_assignments (
    app_user_id BIGINT NOT NULL REFERENCES app_users (id),
    form_id BIGINT NOT NULL REFERENCES forms (id),
    PRIMARY KEY (app_user_id, form_id)
);

CREATE TABLE submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects (id),
    form_id BIGINT NOT NULL REFERENCES forms (id),
    instance_id TEXT NOT NULL,
    encrypted BOOLEAN NOT NULL DEFAULT FALSE,
    review_state TEXT NOT NULL DEFAULT 'received',
    submitter_user_id BIGINT REFERENCES users (id),
    submitter_app_user_id BIGINT REFERENCES app_users (id),
    device_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX submissions_form_instance_key ON submissions (form_id, instance_id);

CREATE TABLE submission_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id BIGINT NOT NULL REFERENCES submissions (id),
    form_id BIGINT NOT NULL REFERENCES forms (id),
    instance_id TEXT NOT NULL,
    form_def_id BIGINT NOT NULL REFERENCES form_defs (id),
    form_version TEXT NOT NULL,
    xml_sealed BLOB NOT NULL,
    xml_sha256 BLOB NOT NULL,
    xml_size BIGINT NOT NULL,
    instance_name TEXT,
    deprecated_id TEXT,
    current BOOLEAN NOT NULL,
    submitter_user_id BIGINT REFERENCES users (id),
    submitter_app_user_id BIGINT REFERENCES app_users (id),
    device_id TEXT,
    created_at BIGINT NOT NULL
);
-- An instanceID is the idempotency key of a form across all versions: concurrent posts of the
-- same instanceID cannot both insert.
CREATE UNIQUE INDEX submission_versions_form_instance_key ON submission_versions (form_id, instance_id);
CREATE INDEX submission_versions_submission ON submission_versions (submission_id);

CREATE TABLE submission_attachments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version_id BIGINT NOT NULL REFERENCES submission_versions (id),
    name TEXT NOT NULL,
    content_type TEXT,
    blob_name TEXT,
    size BIGINT,
    sha256 BLOB
);
CREATE UNIQUE INDEX submission_attachments_version_name_key ON submission_attachments (version_id, name);
