-- KoboToolbox's /data/?start=N and counts walk a form's live submissions in id order: a partial
-- index over live rows lets both run in the index alone, never reading the sealed XML of the
-- rows they pass over.
CREATE INDEX submissions_form_live_id ON submissions (form_id, id) WHERE deleted_at IS NULL;
