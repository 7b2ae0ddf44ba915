-- Retries end (issue 9, path 11): a notification that failed too often or for too long is
-- given up, recorded on the notification and on its last attempt (ListDeliveries shows
-- GIVEN_UP), and no longer leased.
ALTER TABLE notifications ADD COLUMN gave_up_at TIMESTAMPTZ;
ALTER TABLE delivery_attempts ADD COLUMN gave_up BOOLEAN NOT NULL DEFAULT false;
DROP INDEX notifications_pending;
CREATE INDEX notifications_pending ON notifications (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;

-- When each alert last changed, so a live stream whose LISTEN connection dropped can re-send
-- what changed meanwhile (issue 9, path 11).
ALTER TABLE alerts ADD COLUMN updated_at TIMESTAMPTZ;
UPDATE alerts SET updated_at = raised_at;
ALTER TABLE alerts ALTER COLUMN updated_at SET NOT NULL;
CREATE INDEX alerts_by_update ON alerts (updated_at);
