-- Bulk reads page through a form's submissions newest first (data API, exports, OData), and the
-- purge task finds deleted submissions by deletion time.
CREATE INDEX submissions_form_created ON submissions (form_id, created_at DESC, id DESC);
CREATE INDEX submissions_deleted_at ON submissions (deleted_at) WHERE deleted_at IS NOT NULL;
