-- Records a consumer could never apply, kept in the consuming service's own database so that a
-- dead letter is as durable as the state it failed to change, can be listed and, after a fix,
-- replayed through the same handler (`mesh dlq list|replay`). Writing the row also writes an
-- `ops.dead_lettered` event to the outbox in the same transaction: nothing is set aside silently.

CREATE TABLE kit_dead_letters (
    id                  BIGSERIAL PRIMARY KEY,
    service             TEXT        NOT NULL,   -- the consuming service (its producer name)
    consumer            TEXT        NOT NULL,   -- consumer group
    source_topic        TEXT        NOT NULL,
    source_partition    INTEGER     NOT NULL,
    source_offset       BIGINT      NOT NULL,
    event_key           TEXT,
    headers             JSONB       NOT NULL DEFAULT '{}'::jsonb,
    payload             BYTEA       NOT NULL,
    event_type          TEXT,                   -- NULL when the record had no such header
    event_id            UUID,
    reason              TEXT        NOT NULL,
    dead_lettered_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    replay_requested_at TIMESTAMPTZ,            -- set by `mesh dlq replay`, cleared on failure
    replayed_at         TIMESTAMPTZ,            -- set when the replay applied
    last_replay_error   TEXT,
    -- A record redelivered after a crash (offset not yet committed) is set aside once.
    UNIQUE (consumer, source_topic, source_partition, source_offset)
);

-- What each consumer's replay worker looks for.
CREATE INDEX kit_dead_letters_replay ON kit_dead_letters (consumer, id)
    WHERE replay_requested_at IS NOT NULL AND replayed_at IS NULL;

-- Records a consumer reported stalled on (`ops.consumer_stalled`) and has not yet got past.
-- Kept here rather than in the process alone, so whichever process applies the record at
-- last (after a restart, or on another replica after a rebalance) writes the recovery.
CREATE TABLE kit_consumer_stalls (
    consumer         TEXT        NOT NULL,
    source_topic     TEXT        NOT NULL,
    source_partition INTEGER     NOT NULL,
    source_offset    BIGINT      NOT NULL,
    failing_since    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, source_topic, source_partition, source_offset)
);
