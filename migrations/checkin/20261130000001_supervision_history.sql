-- How each supervisee was supervised, and since when: one row per registry snapshot applied,
-- from the time the registry made the change (the event's occurred_at). An offline check-in
-- is judged by the row in force at its device time, so a contact captured before a transfer
-- or a suspension counts for the township and the supervision it was made under.
CREATE TABLE supervision_history (
    supervisee_id UUID        NOT NULL,
    version       BIGINT      NOT NULL,
    township_code TEXT        NOT NULL,
    county_code   TEXT        NOT NULL,
    status        TEXT        NOT NULL CHECK (status IN
                    ('pending_report_in', 'active', 'suspended', 'absconded', 'terminated', 'revoked', 'deceased')),
    since         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (supervisee_id, version)
);
