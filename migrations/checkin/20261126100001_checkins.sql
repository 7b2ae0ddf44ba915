-- The check-in service's schema: its projection of the registry's supervisees, the
-- check-ins themselves and each township's permitted area (geofence). The audit log is the
-- kit's `kit_audit_log`.

-- What the check-in service knows about supervisees, built only from the registry's
-- `supervisee.*` events (a service never reads another service's tables). `version` is the
-- registry's record version: a snapshot is applied only when it is newer, because events can
-- be redelivered or replayed after a restart.
CREATE TABLE supervisees (
    id            UUID PRIMARY KEY,
    name          TEXT        NOT NULL,
    township_code TEXT        NOT NULL,
    county_code   TEXT        NOT NULL,
    status        TEXT        NOT NULL CHECK (status IN
                    ('pending_report_in', 'active', 'suspended', 'absconded', 'terminated', 'revoked', 'deceased')),
    level         TEXT        NOT NULL CHECK (level IN ('strict', 'normal', 'lenient')),
    version       BIGINT      NOT NULL,
    projected_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per accepted check-in. The primary key is the client-generated id: it is what
-- makes retries and re-uploaded offline batches idempotent, and it settles concurrent
-- retries (the loser of the insert race re-reads the winner's row and compares content).
-- No foreign key to `supervisees`: the projection may be rebuilt from the registry's
-- events without touching the check-ins.
CREATE TABLE checkins (
    checkin_id           UUID PRIMARY KEY,
    supervisee_id        UUID        NOT NULL,
    method               TEXT        NOT NULL CHECK (method IN
                           ('home_visit', 'office_report', 'phone_verification', 'app_self_checkin')),
    recording_officer_id TEXT        NOT NULL,   -- empty for app self check-ins
    device_time          TIMESTAMPTZ NOT NULL,   -- when it happened, by the device clock
    received_at          TIMESTAMPTZ NOT NULL,   -- when this service stored it
    latitude             DOUBLE PRECISION,       -- position: all three or none (phone checks)
    longitude            DOUBLE PRECISION,
    accuracy_m           DOUBLE PRECISION,
    face_match_score     DOUBLE PRECISION,       -- identity: a face match score or a manual check
    manual_officer_id    TEXT,
    manual_note          TEXT,
    identity_verified    BOOLEAN     NOT NULL,   -- evaluated with the threshold of the day
    captured_offline     BOOLEAN     NOT NULL,
    out_of_area          BOOLEAN     NOT NULL,   -- against the area as it was when stored
    distance_outside_m   DOUBLE PRECISION NOT NULL,
    township_code        TEXT        NOT NULL,   -- jurisdiction when stored (transfers move people)
    county_code          TEXT        NOT NULL,
    note                 TEXT        NOT NULL,
    content_sha256       BYTEA       NOT NULL,   -- fingerprint of the submitted content: same id
                                                 -- + same content is a retry, different is a conflict
    recorded_by_subject  TEXT        NOT NULL,
    recorded_by_role     TEXT        NOT NULL,
    CHECK ((latitude IS NULL) = (longitude IS NULL) AND (latitude IS NULL) = (accuracy_m IS NULL)),
    CHECK ((face_match_score IS NULL) <> (manual_officer_id IS NULL))
);

-- ListCheckins: one supervisee's check-ins by device time, newest first, keyset-paginated.
CREATE INDEX checkins_by_supervisee_time ON checkins (supervisee_id, device_time DESC, checkin_id DESC);

-- A township's permitted area is the union of circles. Townships without a row fall back
-- to the service's configured default (a circle around the county seat).
CREATE TABLE permitted_areas (
    township_code      TEXT PRIMARY KEY,
    county_code        TEXT        NOT NULL,
    version            BIGINT      NOT NULL,
    updated_by_subject TEXT        NOT NULL,
    updated_by_role    TEXT        NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);

CREATE TABLE permitted_area_circles (
    township_code TEXT    NOT NULL REFERENCES permitted_areas (township_code) ON DELETE CASCADE,
    position      INTEGER NOT NULL,                  -- order as given by the caller
    latitude      DOUBLE PRECISION NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude     DOUBLE PRECISION NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    radius_m      DOUBLE PRECISION NOT NULL CHECK (radius_m > 0),
    PRIMARY KEY (township_code, position)
);
