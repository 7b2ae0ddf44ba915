-- The audit log every service keeps: who read or changed which record, and whose personal
-- data that touched. It lives in the kit (written through `mesh_kit::audit::record`) so each
-- service's log has the same shape and the same guarantees instead of a copy per service.
-- Like the outbox, it is created in every service database, each service keeping its own log.

CREATE TABLE kit_audit_log (
    id            BIGSERIAL PRIMARY KEY,              -- append order
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor_subject TEXT        NOT NULL,               -- the caller's token subject
    actor_role    TEXT        NOT NULL,
    action        TEXT        NOT NULL,               -- e.g. supervisee.get, placement.proposed
    -- The record acted on (a supervisee, a check-in's supervisee, a handover, a base, an
    -- opening, a candidate or a placement); NULL for lists and jurisdiction-wide actions.
    subject_id    UUID,
    -- Whose personal data was read or changed, when that is known and not the subject
    -- itself (e.g. the candidate of a placement), so one person's trail can be pulled out.
    person_id     UUID,
    detail        JSONB       NOT NULL DEFAULT '{}'::jsonb
);

-- One record's history, and one person's, in append order.
CREATE INDEX kit_audit_log_by_subject ON kit_audit_log (subject_id, id);
CREATE INDEX kit_audit_log_by_person ON kit_audit_log (person_id, id) WHERE person_id IS NOT NULL;

-- An audit trail that can be rewritten proves nothing: updates, deletes and truncation are
-- refused, whoever asks. Statement-level, so even a statement matching no row fails.
CREATE FUNCTION kit_audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only';
END
$$;
CREATE TRIGGER kit_audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON kit_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION kit_audit_log_is_append_only();
