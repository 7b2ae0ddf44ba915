-- Release handovers (刑释人员衔接) and their amendments. (The audit log is the kit's
-- `kit_audit_log`.)
-- The national ID number and the prison's risk notes are stored only as AES-256-GCM
-- ciphertext; the national ID also has a keyed blind index (HMAC-SHA256) so one person's
-- open handovers can be found without storing the number. Phone and address given at
-- report-in are not stored at all: they go to the registry in the report-in event.

CREATE TABLE handovers (
    id                         UUID PRIMARY KEY,        -- UUID v7
    prison_id                  TEXT        NOT NULL,    -- releasing prison or detention centre
    prison_reference           TEXT        NOT NULL,    -- the prison's own notice number
    -- Keyed hash of the normalised submission, to tell an idempotent resubmission (same
    -- content) from a conflicting one (same reference, different content).
    submission_fingerprint     BYTEA       NOT NULL,
    person_name                TEXT        NOT NULL,
    national_id_sealed         BYTEA       NOT NULL,
    national_id_index          BYTEA       NOT NULL,
    date_of_birth              DATE        NOT NULL,
    category                   TEXT        NOT NULL CHECK (category IN
                                 ('parole', 'temporary_execution_outside_prison', 'sentence_completed')),
    expected_release_date      DATE        NOT NULL,    -- office time zone, as last amended
    township_code              TEXT        NOT NULL,    -- destination, as last amended
    county_code                TEXT        NOT NULL,
    key_assistance_target      BOOLEAN     NOT NULL,    -- 重点帮教对象: 必接必送
    risk_notes_sealed          BYTEA       NOT NULL,
    offence_category           TEXT        NOT NULL CHECK (offence_category IN
                                 ('unspecified', 'violent', 'property', 'drug', 'sexual', 'against_minors',
                                  'traffic', 'economic_fraud', 'other')),
    status                     TEXT        NOT NULL CHECK (status IN
                                 ('notified', 'acknowledged', 'released', 'reported_in', 'cancelled')),
    notified_at                TIMESTAMPTZ NOT NULL,
    acknowledged_at            TIMESTAMPTZ,
    acknowledged_by_subject    TEXT,
    acknowledged_by_role       TEXT,
    actual_release_time        TIMESTAMPTZ,
    gate_collected_at          TIMESTAMPTZ,
    gate_collecting_officer_id TEXT,
    reported_in_at             TIMESTAMPTZ,
    assigned_level             TEXT CHECK (assigned_level IN ('strict', 'normal', 'lenient')),
    assigned_officer_id        TEXT,
    -- Keyed hash of the report-in request (it holds phone and address), so a retry is told
    -- from a conflicting second report-in without keeping those values.
    report_in_fingerprint      BYTEA,
    cancel_reason              TEXT CHECK (cancel_reason IN ('release_revoked', 'postponed_indefinitely')),
    cancel_note                TEXT,
    cancelled_at               TIMESTAMPTZ,
    updated_at                 TIMESTAMPTZ NOT NULL,
    version                    BIGINT      NOT NULL DEFAULT 1,
    -- Idempotent submission: one notice per prison reference, whatever the race.
    CONSTRAINT handovers_prison_reference_key UNIQUE (prison_id, prison_reference),
    CHECK (status <> 'acknowledged' OR acknowledged_at IS NOT NULL),
    CHECK (status <> 'released' OR actual_release_time IS NOT NULL),
    CHECK (status <> 'reported_in' OR reported_in_at IS NOT NULL),
    CHECK (status <> 'cancelled' OR (cancelled_at IS NOT NULL AND cancel_reason IS NOT NULL))
);

-- One open handover per person: a second notice for someone already on the way out is a
-- mistake (amend or cancel the first). Closed handovers do not block a new one.
CREATE UNIQUE INDEX handovers_one_open_per_person ON handovers (national_id_index)
    WHERE status IN ('notified', 'acknowledged', 'released');

-- Lists are ordered by (notified_at, id) within a prison, a township or a county.
CREATE INDEX handovers_by_prison ON handovers (prison_id, notified_at, id);
CREATE INDEX handovers_by_township ON handovers (township_code, notified_at, id);
CREATE INDEX handovers_by_county ON handovers (county_code, notified_at, id);

-- Amendments made by the prison, oldest first. History: append-only like the audit log.
CREATE TABLE handover_amendments (
    id                             BIGSERIAL PRIMARY KEY,
    handover_id                    UUID        NOT NULL REFERENCES handovers (id),
    previous_expected_release_date DATE,        -- NULL when the date did not change
    new_expected_release_date      DATE,
    previous_township_code         TEXT,        -- NULL when the destination did not change
    previous_county_code           TEXT,
    new_township_code              TEXT,
    new_county_code                TEXT,
    reason                         TEXT        NOT NULL,
    amended_by_subject             TEXT        NOT NULL,
    amended_by_role                TEXT        NOT NULL,
    amended_at                     TIMESTAMPTZ NOT NULL,
    CHECK (new_expected_release_date IS NOT NULL OR new_township_code IS NOT NULL)
);
CREATE INDEX handover_amendments_by_handover ON handover_amendments (handover_id, id);

CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER handover_amendments_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON handover_amendments
    FOR EACH STATEMENT EXECUTE FUNCTION append_only();
