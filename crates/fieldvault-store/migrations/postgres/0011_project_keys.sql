-- Project encryption (ODK end-to-end): the public keys a project's forms carry. One current key
-- per project (retired_at IS NULL); earlier keys stay listed so owners know which private key
-- opens which submissions. The private key never reaches the server.
CREATE TABLE project_keys (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id),
    public_key TEXT NOT NULL,
    created_by BIGINT REFERENCES users (id),
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
CREATE UNIQUE INDEX project_keys_current ON project_keys (project_id) WHERE retired_at IS NULL;

-- A re-keyed form's new definition serves the media of the one it replaces; the blobs' associated
-- data still names the definition they were uploaded for.
ALTER TABLE form_attachments ADD COLUMN sealed_for_def BIGINT;
