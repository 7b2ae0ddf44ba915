-- Published outbox rows are deleted once older than the retention (`MESH_OUTBOX_RETENTION_SECS`,
-- services/kit/src/outbox/purge.rs). This index lets the purge find them oldest first
-- without reading the rows still within the retention.
CREATE INDEX kit_outbox_published ON kit_outbox (published_at) WHERE published_at IS NOT NULL;
