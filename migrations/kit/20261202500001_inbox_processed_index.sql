-- Processed inbox rows are deleted once older than the retention (`MESH_INBOX_RETENTION_SECS`,
-- services/kit/src/consumer/inbox.rs). This index lets the sweep find them oldest first
-- without reading the rows still within the retention.
CREATE INDEX kit_inbox_processed ON kit_inbox (processed_at);
