-- The placement service's schema: resettlement bases (安置帮教基地), their job openings, the
-- candidates looking for work (built only from registry and handover events, never typed
-- in) and the placements of candidates into openings. The audit log is the kit's
-- `kit_audit_log`.

-- A resettlement base. The name is unique within its township so offices can tell bases
-- apart in lists and a double submission is caught.
CREATE TABLE bases (
    id            UUID PRIMARY KEY,                 -- UUID v7
    name          TEXT        NOT NULL,
    township_code TEXT        NOT NULL,
    county_code   TEXT        NOT NULL,
    base_type     TEXT        NOT NULL CHECK (base_type IN ('enterprise', 'farm', 'workshop', 'other')),
    contact_name  TEXT        NOT NULL,
    contact_phone TEXT        NOT NULL,
    active        BOOLEAN     NOT NULL DEFAULT true,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    version       BIGINT      NOT NULL DEFAULT 1,
    CONSTRAINT bases_name_per_township UNIQUE (township_code, name)
);
-- ListBases: by name then id within a township or a county.
CREATE INDEX bases_by_county_name ON bases (county_code, name, id);

-- A job opening. `positions_filled` counts the placements holding a position (accepted or
-- started, not declined or ended). It is changed only under the opening's row lock, and
-- the CHECK is the last line of defence: whatever a bug or a race did, the database never
-- stores an overbooked opening.
CREATE TABLE openings (
    id                  UUID PRIMARY KEY,           -- UUID v7
    base_id             UUID        NOT NULL REFERENCES bases (id),
    title               TEXT        NOT NULL,
    sector              TEXT        NOT NULL CHECK (sector IN ('agriculture', 'manufacturing', 'construction',
                          'logistics', 'catering', 'retail', 'services', 'handicraft', 'other')),
    description         TEXT        NOT NULL,
    required_skills     TEXT[]      NOT NULL,
    positions_total     INTEGER     NOT NULL CHECK (positions_total BETWEEN 1 AND 1000),
    positions_filled    INTEGER     NOT NULL DEFAULT 0,
    work_township_code  TEXT        NOT NULL,
    work_county_code    TEXT        NOT NULL,
    work_latitude       DOUBLE PRECISION CHECK (work_latitude BETWEEN -90 AND 90),
    work_longitude      DOUBLE PRECISION CHECK (work_longitude BETWEEN -180 AND 180),
    closing_date        DATE        NOT NULL,       -- last day for proposals, office time zone
    excluded_offences   TEXT[]      NOT NULL,       -- offence categories the employer refuses
    status              TEXT        NOT NULL CHECK (status IN ('open', 'closed')),
    close_reason        TEXT        NOT NULL DEFAULT '',
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    CHECK (positions_filled BETWEEN 0 AND positions_total),
    CHECK ((work_latitude IS NULL) = (work_longitude IS NULL))
);
-- ListOpenings (newest first) by base, work township or work county; matching reads the
-- open ones of a county.
CREATE INDEX openings_by_base ON openings (base_id, created_at DESC, id DESC);
CREATE INDEX openings_by_work_township ON openings (work_township_code, created_at DESC, id DESC);
CREATE INDEX openings_by_work_county ON openings (work_county_code, created_at DESC, id DESC);

-- What this service knows of the registry's supervisees: only the newest record version
-- (snapshots older than it are ignored, since events can be redelivered or replayed) and
-- the handover the person came from. Kept for every supervisee, also those not looking
-- for work, so a late or replayed older snapshot can never resurrect a candidate.
CREATE TABLE supervisee_versions (
    supervisee_id UUID PRIMARY KEY,
    version       BIGINT      NOT NULL,
    handover_id   UUID,
    projected_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What this service knows of handovers: the facts placement needs (offence category, key
-- assistance target) from the newest `handover.*` snapshot. A supervisee registered from a
-- handover takes its offence category from here, whichever event arrives first.
CREATE TABLE handover_facts (
    handover_id           UUID PRIMARY KEY,
    offence_category      TEXT,                     -- NULL when the prison gave none
    key_assistance_target BOOLEAN     NOT NULL,
    version               BIGINT      NOT NULL,
    projected_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A person looking for work. Supervisees come from `supervisee.*` events (needs_employment),
-- released prisoners (sentence completed) from `handover.reported_in`.
CREATE TABLE candidates (
    id                     UUID PRIMARY KEY,        -- UUID v7
    source                 TEXT        NOT NULL CHECK (source IN ('supervisee', 'released_prisoner')),
    supervisee_id          UUID,                    -- set for supervisees
    handover_id            UUID,                    -- set for released prisoners, and for
                                                    -- supervisees who came from a handover
    source_version         BIGINT      NOT NULL,    -- registry / handover record version applied
    name                   TEXT        NOT NULL,
    township_code          TEXT        NOT NULL,
    county_code            TEXT        NOT NULL,
    offence_category       TEXT,                    -- NULL = unknown (never "no offence")
    offence_from_handover  BOOLEAN     NOT NULL DEFAULT false, -- then an office may not change it
    key_assistance_target  BOOLEAN     NOT NULL DEFAULT false,
    skills                 TEXT[]      NOT NULL DEFAULT '{}',
    sector_preferences     TEXT[]      NOT NULL DEFAULT '{}',
    active                 BOOLEAN     NOT NULL,    -- as the source events say
    assistance_ends_on     DATE,                    -- released prisoners: end of the 5-year
                                                    -- assistance period (office time zone)
    current_placement_id   UUID,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL,
    version                BIGINT      NOT NULL DEFAULT 1,
    CHECK ((source = 'supervisee') = (supervisee_id IS NOT NULL)),
    CHECK (source = 'supervisee' OR handover_id IS NOT NULL)
);
-- One candidate per supervisee and per released person's handover, whatever the
-- redeliveries: the projection upserts on these.
CREATE UNIQUE INDEX candidates_one_per_supervisee ON candidates (supervisee_id) WHERE supervisee_id IS NOT NULL;
CREATE UNIQUE INDEX candidates_one_per_release ON candidates (handover_id) WHERE source = 'released_prisoner';
CREATE INDEX candidates_by_handover ON candidates (handover_id) WHERE handover_id IS NOT NULL;
-- ListCandidates: by name then id within a township or a county.
CREATE INDEX candidates_by_township_name ON candidates (township_code, name, id);
CREATE INDEX candidates_by_county_name ON candidates (county_code, name, id);

-- A placement of a candidate into an opening. proposed → accepted | declined;
-- accepted → started | declined; started → ended.
CREATE TABLE placements (
    id                  UUID PRIMARY KEY,           -- UUID v7
    candidate_id        UUID        NOT NULL REFERENCES candidates (id),
    opening_id          UUID        NOT NULL REFERENCES openings (id),
    base_id             UUID        NOT NULL REFERENCES bases (id),
    status              TEXT        NOT NULL CHECK (status IN ('proposed', 'accepted', 'declined', 'started', 'ended')),
    township_code       TEXT        NOT NULL,       -- the candidate's jurisdiction
    county_code         TEXT        NOT NULL,
    proposed_by_subject TEXT        NOT NULL,
    proposed_by_role    TEXT        NOT NULL,
    proposed_at         TIMESTAMPTZ NOT NULL,
    accepted_at         TIMESTAMPTZ,
    declined_at         TIMESTAMPTZ,
    declined_by         TEXT CHECK (declined_by IN ('candidate', 'base')),
    decline_reason      TEXT        NOT NULL DEFAULT '',
    start_date          DATE,
    end_date            DATE,
    end_reason          TEXT CHECK (end_reason IN ('completed', 'resigned', 'dismissed', 'custody', 'other')),
    end_note            TEXT        NOT NULL DEFAULT '',
    note                TEXT        NOT NULL DEFAULT '',
    updated_at          TIMESTAMPTZ NOT NULL,
    version             BIGINT      NOT NULL DEFAULT 1,
    CHECK (status NOT IN ('accepted', 'started', 'ended') OR accepted_at IS NOT NULL),
    CHECK (status <> 'declined' OR (declined_at IS NOT NULL AND declined_by IS NOT NULL)),
    CHECK (status NOT IN ('started', 'ended') OR start_date IS NOT NULL),
    CHECK (status <> 'ended' OR (end_date IS NOT NULL AND end_reason IS NOT NULL AND end_date >= start_date))
);
-- A candidate has at most one current (not final) placement; the service checks it under
-- the candidate's row lock and this index makes it hold whatever happens.
CREATE UNIQUE INDEX placements_one_current_per_candidate ON placements (candidate_id)
    WHERE status IN ('proposed', 'accepted', 'started');
CREATE INDEX placements_by_opening ON placements (opening_id);
