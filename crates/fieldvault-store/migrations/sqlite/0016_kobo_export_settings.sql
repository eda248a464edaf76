-- KoboToolbox's saved export settings (/api/v2/assets/{uid}/export-settings/): named export
-- options of a form, and the stable URLs of their synchronous data.csv / data.xlsx files.
CREATE TABLE kobo_export_settings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL,
    project_id BIGINT NOT NULL REFERENCES projects (id),
    form_id BIGINT NOT NULL REFERENCES forms (id),
    name TEXT NOT NULL,
    settings TEXT NOT NULL,
    created_by BIGINT REFERENCES users (id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX kobo_export_settings_uid_key ON kobo_export_settings (uid);
CREATE UNIQUE INDEX kobo_export_settings_form_name_key ON kobo_export_settings (form_id, name);
