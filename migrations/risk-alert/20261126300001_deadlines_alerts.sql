-- Risk-alert state: what it knows of each supervisee (a projection of registry and check-in
-- events), the deadlines it watches, the alerts it raised, and webhook delivery.

-- Projection of supervisees. Rows may exist before the registry event arrives (a check-in
-- can overtake its supervisee's registration across topics); level/status then stay NULL.
CREATE TABLE supervisees (
    supervisee_id     UUID PRIMARY KEY,
    name              TEXT        NOT NULL DEFAULT '',
    township_code     TEXT        NOT NULL DEFAULT '',
    county_code       TEXT        NOT NULL DEFAULT '',
    level             TEXT,
    status            TEXT,
    version           BIGINT      NOT NULL DEFAULT 0,   -- registry record version applied
    last_contact_at   TIMESTAMPTZ,                      -- last identity-verified contact
    last_in_person_at TIMESTAMPTZ,                      -- last home visit / office report
    last_checkin_id   TEXT,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Deadlines being watched. A row is deleted when its alert is raised; the alert keeps the
-- evidence. Replicas claim due rows with FOR UPDATE SKIP LOCKED.
CREATE TABLE deadlines (
    subject_id    UUID        NOT NULL,
    track         TEXT        NOT NULL,   -- checkin | in_person | absconding_warning | absconding_revocation
    due_at        TIMESTAMPTZ NOT NULL,   -- the deadline itself
    grace_seconds BIGINT      NOT NULL,
    fire_at       TIMESTAMPTZ NOT NULL,   -- due_at + grace: when the alert is raised
    since_at      TIMESTAMPTZ NOT NULL,   -- the contact the deadline counts from
    PRIMARY KEY (subject_id, track)
);
CREATE INDEX deadlines_by_fire_at ON deadlines (fire_at);

-- Alerts. `body` is the encoded mesh.alert.v1.Alert; the columns beside it are what lists
-- filter on. The unique dedup key is what makes "exactly one alert per missed deadline"
-- hold across replicas and restarts.
CREATE TABLE alerts (
    alert_id      UUID PRIMARY KEY,
    dedup_key     TEXT        NOT NULL UNIQUE,
    kind          TEXT        NOT NULL,
    status        TEXT        NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    subject_id    TEXT        NOT NULL,
    township_code TEXT        NOT NULL,
    county_code   TEXT        NOT NULL,
    raised_at     TIMESTAMPTZ NOT NULL,
    body          BYTEA       NOT NULL
);
CREATE INDEX alerts_by_township ON alerts (township_code, raised_at DESC, alert_id);
CREATE INDEX alerts_by_county ON alerts (county_code, raised_at DESC, alert_id);
CREATE INDEX alerts_open_by_subject ON alerts (subject_id) WHERE status <> 'resolved';

-- Webhook endpoints: one per township office, or per county bureau (township_code = '').
CREATE TABLE endpoints (
    endpoint_id    UUID PRIMARY KEY,
    township_code  TEXT        NOT NULL,
    county_code    TEXT        NOT NULL,
    url            TEXT        NOT NULL,
    secret_sealed  BYTEA       NOT NULL,   -- AES-256-GCM; never returned or logged
    description    TEXT        NOT NULL DEFAULT '',
    registered_by_subject TEXT NOT NULL,
    registered_by_role    TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (county_code, township_code)
);

-- One notification per alert change and endpoint; its id is the receiver's idempotency key
-- and stays the same on every retry. Pending rows survive restarts.
CREATE TABLE notifications (
    notification_id UUID PRIMARY KEY,
    alert_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    endpoint_id     UUID        NOT NULL REFERENCES endpoints (endpoint_id),
    body            BYTEA       NOT NULL,   -- JSON posted to the endpoint
    created_at      TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    delivered_at    TIMESTAMPTZ,
    last_error      TEXT
);
CREATE INDEX notifications_pending ON notifications (next_attempt_at) WHERE delivered_at IS NULL;

-- Every delivery attempt, for ListDeliveries and audits.
CREATE TABLE delivery_attempts (
    id              BIGSERIAL PRIMARY KEY,
    notification_id UUID        NOT NULL REFERENCES notifications (notification_id),
    alert_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    endpoint_id     UUID        NOT NULL,
    url             TEXT        NOT NULL,
    attempt_number  INTEGER     NOT NULL,
    attempted_at    TIMESTAMPTZ NOT NULL,
    http_status     INTEGER     NOT NULL,   -- 0 when no HTTP response
    delivered       BOOLEAN     NOT NULL,
    error           TEXT        NOT NULL DEFAULT '',
    duration_ms     INTEGER     NOT NULL,
    next_attempt_at TIMESTAMPTZ
);
CREATE INDEX delivery_attempts_by_alert ON delivery_attempts (alert_id, id);
