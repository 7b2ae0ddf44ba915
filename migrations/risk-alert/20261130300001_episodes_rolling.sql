-- Gap-proof deadlines (docs/domain.md, "Nobody falls through the cracks").
--
-- Episodes: a supervision that was suspended and becomes active again is a new episode. Its
-- deadlines count from the reactivation (never from a contact before the suspension, nor
-- across the suspended time), and its alerts get dedup keys of their own.
ALTER TABLE supervisees
    ADD COLUMN episode       INTEGER     NOT NULL DEFAULT 1,
    ADD COLUMN episode_since TIMESTAMPTZ;

-- A fired deadline is never simply gone: a recurring track (check-in, in person,
-- acknowledgement) is rolled forward to its next period; a one-shot track (absconding
-- thresholds, gate collection, report-in) stays as a fired row, so the watch list still
-- shows the track is covered. `origin_due` is the deadline as computed from the contact,
-- before any rolling, so recomputing from an unchanged contact keeps the rolled row.
ALTER TABLE deadlines
    ADD COLUMN fired_at   TIMESTAMPTZ,
    ADD COLUMN origin_due TIMESTAMPTZ;
UPDATE deadlines SET origin_due = due_at;
ALTER TABLE deadlines ALTER COLUMN origin_due SET NOT NULL;
DROP INDEX deadlines_by_fire_at;
CREATE INDEX deadlines_pending_by_fire_at ON deadlines (fire_at) WHERE fired_at IS NULL;

-- A report-in closes the 漏管 watch only once the person is actually registered: the
-- registry's `supervisee.registered` naming the handover sets this (sentence-completed
-- releases are not registered in supervision; their report-in closes the watch).
ALTER TABLE handovers ADD COLUMN registered_supervisee_id UUID;
