-- Whether a version's XML adds nothing to the CSV layout of the definition it was filled against
-- (checked at intake; NULL: not checked, as for rows received before this column existed). A CSV
-- export needs a pass over every submission to find columns the form does not declare only when
-- the form has a current version that is not known to fit; the partial index answers that
-- without reading rows, and costs intake nothing for the versions that fit.
ALTER TABLE submission_versions ADD COLUMN fits_form BOOLEAN;
CREATE INDEX submission_versions_unfitted ON submission_versions (form_id)
    WHERE current = TRUE AND fits_form IS NOT TRUE;
