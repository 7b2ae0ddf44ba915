-- A supervisee registered from a prison handover's report-in keeps the handover id; one
-- handover registers at most one supervisee, however often its event is redelivered.
CREATE UNIQUE INDEX supervisees_one_per_handover ON supervisees (handover_id) WHERE handover_id IS NOT NULL;
