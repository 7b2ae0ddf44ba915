-- Projection of open prison handovers (from handover.* events), for the acknowledgement,
-- gate-collection and report-in (漏管) deadlines. Subject ids of these deadlines and alerts
-- are handover ids.
CREATE TABLE handovers (
    handover_id           UUID PRIMARY KEY,
    person_name           TEXT        NOT NULL,
    prison_id             TEXT        NOT NULL,
    prison_reference      TEXT        NOT NULL,
    category              TEXT        NOT NULL,
    township_code         TEXT        NOT NULL,
    county_code           TEXT        NOT NULL,
    key_target            BOOLEAN     NOT NULL,
    status                TEXT        NOT NULL,
    expected_release_date DATE        NOT NULL,
    notified_at           TIMESTAMPTZ,
    ack_since             TIMESTAMPTZ,   -- when the current destination received the notice
    acknowledged_at       TIMESTAMPTZ,
    actual_release_time   TIMESTAMPTZ,
    gate_collected_at     TIMESTAMPTZ,
    reported_in_at        TIMESTAMPTZ,
    version               BIGINT      NOT NULL
);
