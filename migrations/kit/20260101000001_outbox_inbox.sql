-- Tables the service kit needs in every service database: the transactional outbox
-- (events written in the same transaction as the state change, published by the relay)
-- and the consumer inbox (event ids already applied, for idempotent at-least-once consumption).

CREATE TABLE kit_outbox (
    id           BIGSERIAL PRIMARY KEY,          -- publication order
    event_id     UUID        NOT NULL UNIQUE,    -- UUID v7, sent as the `event_id` header
    topic        TEXT        NOT NULL,
    event_key    TEXT        NOT NULL,           -- Kafka key: the subject's id
    event_type   TEXT        NOT NULL,           -- e.g. supervisee.registered
    payload      BYTEA       NOT NULL,           -- protobuf-encoded event
    trace_headers JSONB      NOT NULL DEFAULT '{}'::jsonb, -- W3C trace context at enqueue time
    occurred_at  TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ,
    attempts     INTEGER     NOT NULL DEFAULT 0,
    last_error   TEXT
);

CREATE INDEX kit_outbox_unpublished ON kit_outbox (id) WHERE published_at IS NULL;

CREATE TABLE kit_inbox (
    consumer     TEXT        NOT NULL,           -- consumer group that applied the event
    event_id     UUID        NOT NULL,
    topic        TEXT        NOT NULL,
    kafka_partition INTEGER  NOT NULL,
    kafka_offset BIGINT      NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
