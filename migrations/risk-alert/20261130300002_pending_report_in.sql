-- A person sentenced directly to community corrections is registered pending report-in and
-- must report in within 10 days of the judgment taking effect (the Law, art. 21): the
-- deadline counts from the start of the term's first day, kept here from the registry's
-- snapshots.
ALTER TABLE supervisees ADD COLUMN report_in_from TIMESTAMPTZ;
