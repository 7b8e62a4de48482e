-- 001: the lot registry. Lots, their append-only event log, gavage feedings, device assignments,
-- SQAL samples, products and consumer feedback. Later issues add migrations 002, 003, ...

-- Per-day counter behind lot ids LOT_YYYYMMDD_XXXX (one row per UTC day).
CREATE TABLE lot_id_counters (
    day  date PRIMARY KEY,
    last integer NOT NULL CHECK (last > 0)
);

CREATE TABLE lots (
    id                     text PRIMARY KEY CHECK (id ~ '^LOT_[0-9]{8}_[0-9]{4,6}$'),
    farmer_id              text NOT NULL CHECK (length(farmer_id) BETWEEN 1 AND 64),
    farmer_name            text NOT NULL CHECK (length(farmer_name) BETWEEN 1 AND 200),
    site_code              text NOT NULL CHECK (site_code ~ '^[A-Z]{2}$'),
    genetics               text NOT NULL CHECK (genetics IN ('Mulard', 'Barbarie', 'Pekin')),
    nb_ducks               integer NOT NULL CHECK (nb_ducks BETWEEN 1 AND 100000),
    planned_duration_days  integer NOT NULL CHECK (planned_duration_days BETWEEN 1 AND 60),
    state                  text NOT NULL DEFAULT 'created'
                           CHECK (state IN ('created', 'gavage', 'ready', 'inspecting', 'inspected', 'suspended', 'closed')),
    suspended_from         text CHECK (suspended_from IN ('created', 'gavage', 'ready', 'inspecting')),
    quality_profile        text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    -- gavage progress (updated by each new feeding)
    gavage_started_at      timestamptz,
    gavage_ended_at        timestamptz,
    current_day            integer NOT NULL DEFAULT 0 CHECK (current_day >= 0),
    maize_total_per_duck_g numeric(10, 1) NOT NULL DEFAULT 0 CHECK (maize_total_per_duck_g >= 0),
    mean_weight_g          numeric(8, 1),
    live_ducks             integer CHECK (live_ducks >= 0),
    mortality_pct          numeric(6, 3) CHECK (mortality_pct BETWEEN 0 AND 100),
    -- SQAL inspection results (set when the inspection closes)
    inspection_started_at  timestamptz,
    inspected_at           timestamptz,
    grade_distribution     jsonb,
    sample_count           integer NOT NULL DEFAULT 0,
    mean_liver_weight_g    numeric(8, 1),
    itm                    numeric(8, 3),
    itm_grade              text CHECK (itm_grade IN ('A+', 'A', 'B', 'C')),
    closed_at              timestamptz,
    CHECK ((state = 'suspended') = (suspended_from IS NOT NULL))
);
CREATE INDEX lots_state_idx ON lots (state);
CREATE INDEX lots_created_at_idx ON lots (created_at);

-- Append-only log: written in the same transaction as the change it records.
CREATE TABLE lot_events (
    id          bigserial PRIMARY KEY,
    lot_id      text NOT NULL REFERENCES lots (id),
    at          timestamptz NOT NULL DEFAULT now(),
    stage       text NOT NULL CHECK (stage IN ('registry', 'gavage', 'sqal', 'consumer')),
    type        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    description text NOT NULL DEFAULT ''
);
CREATE INDEX lot_events_lot_idx ON lot_events (lot_id, at, id);

CREATE FUNCTION lot_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lot_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER lot_events_no_update_delete
    BEFORE UPDATE OR DELETE ON lot_events
    FOR EACH ROW EXECUTE FUNCTION lot_events_append_only();
CREATE TRIGGER lot_events_no_truncate
    BEFORE TRUNCATE ON lot_events
    FOR EACH STATEMENT EXECUTE FUNCTION lot_events_append_only();

-- One row per lot, day and moment: a re-sent feeding hits the primary key and changes nothing.
CREATE TABLE gavage_feedings (
    lot_id         text NOT NULL REFERENCES lots (id),
    day            integer NOT NULL CHECK (day BETWEEN 1 AND 60),
    moment         text NOT NULL CHECK (moment IN ('morning', 'evening')),
    planned_dose_g numeric(7, 1) NOT NULL CHECK (planned_dose_g >= 0),
    actual_dose_g  numeric(7, 1) NOT NULL CHECK (actual_dose_g >= 0),
    mean_weight_g  numeric(8, 1) CHECK (mean_weight_g > 0),
    live_ducks     integer CHECK (live_ducks >= 0),
    mortality_pct  numeric(6, 3) CHECK (mortality_pct BETWEEN 0 AND 100),
    temperature_c  numeric(5, 2),
    humidity_pct   numeric(5, 2) CHECK (humidity_pct BETWEEN 0 AND 100),
    simulated_at   timestamptz,
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lot_id, day, moment)
);

-- Which lot a SQAL device (line) inspects over [valid_from, valid_to); valid_to NULL = still open.
CREATE TABLE device_assignments (
    id         bigserial PRIMARY KEY,
    lot_id     text NOT NULL REFERENCES lots (id),
    device_id  text NOT NULL CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$'),
    line       text,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE UNIQUE INDEX device_assignments_one_open ON device_assignments (device_id) WHERE valid_to IS NULL;
CREATE INDEX device_assignments_lookup ON device_assignments (device_id, valid_from);
CREATE INDEX device_assignments_lot ON device_assignments (lot_id);

CREATE TABLE sqal_samples (
    id               bigserial PRIMARY KEY,
    device_id        text NOT NULL,
    boot             bigint NOT NULL,
    seq              bigint NOT NULL,
    lot_id           text REFERENCES lots (id),
    link_kind        text NOT NULL CHECK (link_kind IN ('explicit', 'assignment', 'none')),
    requested_lot_id text,            -- the lot id the device sent, kept even when unknown
    link_issue       text CHECK (link_issue IN ('unknown_lot', 'no_assignment')),
    measured_at      timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    clock_synced     boolean NOT NULL DEFAULT true,
    score            real,
    grade            text,
    device_score     real,
    device_grade     text,
    weight_g         real,
    volume_cm3       real,
    alerts           text[] NOT NULL DEFAULT '{}',
    features         jsonb,
    raw              jsonb,
    UNIQUE (device_id, boot, seq),
    CHECK ((lot_id IS NULL) = (link_kind = 'none'))
);
CREATE INDEX sqal_samples_lot_idx ON sqal_samples (lot_id, measured_at) WHERE lot_id IS NOT NULL;
CREATE INDEX sqal_samples_device_time_idx ON sqal_samples (device_id, received_at);
CREATE INDEX sqal_samples_unlinked_idx ON sqal_samples (received_at) WHERE lot_id IS NULL;

CREATE TABLE products (
    id         bigserial PRIMARY KEY,
    lot_id     text NOT NULL REFERENCES lots (id),
    gtin       text NOT NULL CHECK (gtin ~ '^[0-9]{14}$'),
    qr_uri     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gtin, lot_id)
);
CREATE INDEX products_lot_idx ON products (lot_id);

CREATE TABLE consumer_feedback (
    id         bigserial PRIMARY KEY,
    product_id bigint REFERENCES products (id),
    lot_id     text NOT NULL REFERENCES lots (id),
    rating     smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    texture    smallint CHECK (texture BETWEEN 1 AND 5),
    flavor     smallint CHECK (flavor BETWEEN 1 AND 5),
    freshness  smallint CHECK (freshness BETWEEN 1 AND 5),
    comment    text CHECK (length(comment) <= 2000),
    context    text CHECK (context IN ('home', 'restaurant', 'special_event', 'gift')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consumer_feedback_lot_idx ON consumer_feedback (lot_id);
