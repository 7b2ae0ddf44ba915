-- The scheduler sleeps until the earliest pending deadline instead of polling, and is woken
-- when a deadline is written that may fall due before it would otherwise look again
-- (services/risk-alert/src/scheduler/alarm.rs). The table stays the truth: a notice only
-- says "read again".
--
-- A commit that notifies takes a lock that serialises every notifying commit of the
-- PostgreSQL cluster, so notices are kept for the deadlines that need them:
-- - only a deadline that is now the earliest pending one: a later one is seen when the
--   scheduler reads the table again after firing the earliest (a wave of registrations
--   notifies once, not once per person);
-- - only one firing within the hour: the scheduler reads the earliest pending deadline at
--   least every fallback poll (at most 30 min, services/risk-alert/src/scheduler.rs), so a
--   later one is armed in time without a notice, and ordinary check-ins, which move a
--   deadline a day or more ahead, commit without NOTIFY.
-- A deadline written while another transaction fires the earliest one may miss its notice
-- (neither sees the other's rows); the fallback poll bounds that delay.
-- A constant payload lets PostgreSQL fold a transaction's notices into one.
CREATE FUNCTION deadlines_notify_soon() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.fired_at IS NULL
       AND NEW.fire_at < now() + interval '1 hour'
       AND NEW.fire_at <= (SELECT min(fire_at) FROM deadlines WHERE fired_at IS NULL) THEN
        PERFORM pg_notify('mesh_deadline_changes', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deadlines_notify_soon
    AFTER INSERT OR UPDATE OF fire_at, fired_at ON deadlines
    FOR EACH ROW EXECUTE FUNCTION deadlines_notify_soon();
