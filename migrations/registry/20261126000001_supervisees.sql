-- Supervisees. (The audit log is the kit's `kit_audit_log`.)
-- Personal data (national ID number, phone, address) is stored only as AES-256-GCM
-- ciphertext; the national ID also has a keyed blind index (HMAC-SHA256) for lookups.

CREATE TABLE supervisees (
    id                 UUID PRIMARY KEY,            -- UUID v7, so id order is registration order
    name               TEXT        NOT NULL,
    national_id_sealed BYTEA       NOT NULL,
    national_id_index  BYTEA       NOT NULL,
    category           TEXT        NOT NULL CHECK (category IN
                         ('public_surveillance', 'probation', 'parole', 'temporary_execution_outside_prison')),
    term_start         DATE        NOT NULL,
    term_end           DATE        NOT NULL CHECK (term_end >= term_start),
    level              TEXT        NOT NULL CHECK (level IN ('strict', 'normal', 'lenient')),
    township_code      TEXT        NOT NULL,
    county_code        TEXT        NOT NULL,
    officer_id         TEXT        NOT NULL,
    phone_sealed       BYTEA       NOT NULL,
    address_sealed     BYTEA       NOT NULL,
    status             TEXT        NOT NULL CHECK (status IN
                         ('pending_report_in', 'active', 'suspended', 'absconded', 'terminated', 'revoked', 'deceased')),
    needs_employment   BOOLEAN     NOT NULL DEFAULT false,
    reported_at        TIMESTAMPTZ,
    handover_id        TEXT,
    registered_at      TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    version            BIGINT      NOT NULL DEFAULT 1
);

-- One open supervision per person: closed (final) supervisions do not block a new one.
CREATE UNIQUE INDEX supervisees_one_open_per_person ON supervisees (national_id_index)
    WHERE status NOT IN ('terminated', 'revoked', 'deceased');
CREATE INDEX supervisees_by_township ON supervisees (township_code, id);
