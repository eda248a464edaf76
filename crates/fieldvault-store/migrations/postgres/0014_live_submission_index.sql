-- Reads that pass over an offset walk a form's live submissions in the index alone, never
-- reading the rows (or their sealed XML) they pass over: KoboToolbox's /data/?start=N and counts
-- in id order, the data API's offset and OData's $skip newest first.
CREATE INDEX submissions_form_live_id ON submissions (form_id, id) WHERE deleted_at IS NULL;
CREATE INDEX submissions_form_live_created ON submissions (form_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;
