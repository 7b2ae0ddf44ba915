-- Batched webhook delivery and a lease that scales (issue 11, item 3).
--
-- An endpoint opts in to batches at registration: up to max_batch_size notifications go in
-- one signed POST. 1 (every existing endpoint) keeps one notification per POST.
ALTER TABLE endpoints ADD COLUMN max_batch_size INTEGER NOT NULL DEFAULT 1
    CHECK (max_batch_size BETWEEN 1 AND 1000);

-- Leasing walks the endpoints and takes, for each, only the few notifications due first
-- (store/webhooks.rs, lease_due): an index by endpoint then due time lets each endpoint's
-- look stop after those, however many are pending (a wave of missed deadlines queues
-- tens of thousands for one township).
DROP INDEX notifications_pending;
CREATE INDEX notifications_pending ON notifications (endpoint_id, next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
