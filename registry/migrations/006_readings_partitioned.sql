-- 006: the readings at a year of data (docs/registry.md, "Readings at scale").
--
-- * sqal_samples: one row per reading (key, lot link, times, grades, weights, alerts, features),
--   partitioned by month of its *span day* and kept for years (retention: SQAL_RETENTION_SAMPLES_DAYS).
--   `features_z` holds the features in the compact blob format (registry/blobs.py); the raw payload
--   is no longer in this row.
-- * sqal_sample_raw: the raw payload of each reading (blob: the contract's binary form, deflated),
--   partitioned by the UTC day it was received, dropped after SQAL_RETENTION_RAW_DAYS.
-- * sqal_sample_spans: the dedupe rule across partitions. A span is 4096 consecutive seqs of one
--   boot of one device: (device_id, boot, seq >> 12). Its `day` is fixed by the first reading of
--   the span that arrives, and every reading of the span goes to the partition of that day. The
--   day is a function of the dedupe key, so the unique index (device_id, boot, seq, day) -- a
--   partitioned table's unique index must hold the partition key -- refuses a second copy of a
--   reading exactly, however many days later it is replayed.
-- * sqal_sample_hours: per device, lot (and lot the device asked for) and hour of measurement:
--   counts per grade, score and weight sums, extremes and times, updated in the same statement
--   that stores the readings. Lot pages, inspection results and the dispatcher read these, never
--   the readings.
--
-- Existing rows are converted here (features and raw kept as their JSON text, format 0 of the
-- blob); partitions are made for the days they cover and for the next week.

CREATE TABLE sqal_sample_spans (
    device_id text NOT NULL,
    boot      bigint NOT NULL,
    span      bigint NOT NULL,   -- seq >> 12
    day       date NOT NULL,     -- UTC day its first reading arrived: the partition of all its readings
    PRIMARY KEY (device_id, boot, span)
);
CREATE INDEX sqal_sample_spans_day_idx ON sqal_sample_spans (day);

ALTER TABLE sqal_samples RENAME TO sqal_samples_005;
ALTER SEQUENCE sqal_samples_id_seq OWNED BY NONE;

-- Columns ordered widest-aligned first (no padding between them).
CREATE TABLE sqal_samples (
    id               bigint NOT NULL DEFAULT nextval('sqal_samples_id_seq'),
    boot             bigint NOT NULL,
    seq              bigint NOT NULL,
    measured_at      timestamptz,
    received_at      timestamptz NOT NULL,
    day              date NOT NULL,  -- the span's day (sqal_sample_spans): partition key
    score            real,
    device_score     real,
    weight_g         real,
    volume_cm3       real,
    clock_synced     boolean NOT NULL DEFAULT true,
    device_id        text NOT NULL,
    lot_id           text REFERENCES lots (id),
    link_kind        text NOT NULL CHECK (link_kind IN ('explicit', 'assignment', 'none')),
    requested_lot_id text,
    link_issue       text CHECK (link_issue IN ('unknown_lot', 'no_assignment')),
    grade            text,
    device_grade     text,
    alerts           text[] NOT NULL DEFAULT '{}',
    features_z       bytea,          -- registry/blobs.py
    CHECK ((lot_id IS NULL) = (link_kind = 'none'))
) PARTITION BY RANGE (day);
ALTER SEQUENCE sqal_samples_id_seq OWNED BY sqal_samples.id;
CREATE UNIQUE INDEX sqal_samples_key ON sqal_samples (device_id, boot, seq, day);
-- lot_id alone: B-tree deduplication stores each lot id once per leaf page (a few bytes a reading)
CREATE INDEX sqal_samples_lot ON sqal_samples (lot_id) WHERE lot_id IS NOT NULL;

CREATE TABLE sqal_sample_raw (
    id      bigint NOT NULL,   -- sqal_samples.id
    day     date NOT NULL,     -- UTC day received: partition key
    payload bytea NOT NULL     -- registry/blobs.py
) PARTITION BY RANGE (day);
-- ids grow with insertion order: a block-range index finds one in a few pages at ~0 bytes a row
CREATE INDEX sqal_sample_raw_id ON sqal_sample_raw USING brin (id);

CREATE FUNCTION sqal_add_counts(a jsonb, b jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(jsonb_object_agg(k, n), '{}'::jsonb) FROM (
        SELECT k, sum(v::bigint) AS n FROM (
            SELECT key AS k, value AS v FROM jsonb_each_text(COALESCE(a, '{}'::jsonb))
            UNION ALL SELECT key, value FROM jsonb_each_text(COALESCE(b, '{}'::jsonb))) x
        GROUP BY k) y
$$;

CREATE TABLE sqal_sample_hours (
    hour             timestamptz NOT NULL,  -- hour of measurement (of receipt when the clock was not trusted)
    device_id        text NOT NULL,
    lot_id           text REFERENCES lots (id),
    requested_lot_id text,
    samples          bigint NOT NULL,
    grades           jsonb NOT NULL,        -- {grade: count}, 'none' = not graded
    score_n          bigint NOT NULL,
    score_sum        double precision,
    score_sumsq      double precision,
    score_min        real,
    score_max        real,
    weight_n         bigint NOT NULL,       -- weighed readings (weight_g > 0)
    weight_sum       double precision,
    weight_sumsq     double precision,
    weight_min       real,
    weight_max       real,
    first_at         timestamptz NOT NULL,  -- measurement (or receipt) time of the first and last reading
    last_at          timestamptz NOT NULL,
    last_received_at timestamptz NOT NULL,
    evented_at       timestamptz,           -- last `sqal_samples` lot event written for this row
    UNIQUE NULLS NOT DISTINCT (hour, device_id, lot_id, requested_lot_id)
);
CREATE INDEX sqal_sample_hours_lot_idx ON sqal_sample_hours (lot_id) WHERE lot_id IS NOT NULL;
CREATE INDEX sqal_sample_hours_device_idx ON sqal_sample_hours (device_id, last_received_at);

-- Missing partitions for [lo, hi]: sqal_samples by month, sqal_sample_raw by day. Made as a plain
-- table, then attached: ATTACH takes SHARE UPDATE EXCLUSIVE on the parent (inserts go on), where
-- CREATE TABLE .. PARTITION OF would take ACCESS EXCLUSIVE. Returns the tables made.
CREATE FUNCTION sqal_create_partitions(lo date, hi date) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    d date;
    name text;
BEGIN
    d := date_trunc('month', lo)::date;
    WHILE d <= hi LOOP
        name := 'sqal_samples_' || to_char(d, 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE sqal_samples INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
            EXECUTE format('ALTER TABLE sqal_samples ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           name, d, (d + interval '1 month')::date);
            RETURN NEXT name;
        END IF;
        d := (d + interval '1 month')::date;
    END LOOP;
    d := lo;
    WHILE d <= hi LOOP
        name := 'sqal_sample_raw_' || to_char(d, 'YYYY_MM_DD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE sqal_sample_raw INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
            EXECUTE format('ALTER TABLE sqal_sample_raw ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           name, d, d + 1);
            RETURN NEXT name;
        END IF;
        d := d + 1;
    END LOOP;
END
$$;

-- Existing readings: spans from their first receipt, then the rows, the raw payloads, the hours.
INSERT INTO sqal_sample_spans (device_id, boot, span, day)
SELECT device_id, boot, seq >> 12, min((received_at AT TIME ZONE 'UTC')::date)
FROM sqal_samples_005 GROUP BY 1, 2, 3;

SELECT count(*) FROM sqal_create_partitions(
    LEAST((SELECT min((received_at AT TIME ZONE 'UTC')::date) FROM sqal_samples_005),
          (now() AT TIME ZONE 'UTC')::date - 1),
    (now() AT TIME ZONE 'UTC')::date + 7);

INSERT INTO sqal_samples (id, boot, seq, measured_at, received_at, day, score, device_score, weight_g, volume_cm3,
                          clock_synced, device_id, lot_id, link_kind, requested_lot_id, link_issue, grade,
                          device_grade, alerts, features_z)
SELECT o.id, o.boot, o.seq, o.measured_at, o.received_at, sp.day, o.score, o.device_score, o.weight_g, o.volume_cm3,
       o.clock_synced, o.device_id, o.lot_id, o.link_kind, o.requested_lot_id, o.link_issue, o.grade,
       o.device_grade, o.alerts,
       CASE WHEN o.features IS NOT NULL THEN '\x00'::bytea || convert_to(o.features::text, 'UTF8') END
FROM sqal_samples_005 o
JOIN sqal_sample_spans sp ON sp.device_id = o.device_id AND sp.boot = o.boot AND sp.span = o.seq >> 12;

INSERT INTO sqal_sample_raw (id, day, payload)
SELECT id, (received_at AT TIME ZONE 'UTC')::date, '\x00'::bytea || convert_to(raw::text, 'UTF8')
FROM sqal_samples_005 WHERE raw IS NOT NULL;

INSERT INTO sqal_sample_hours (hour, device_id, lot_id, requested_lot_id, samples, grades, score_n, score_sum,
                               score_sumsq, score_min, score_max, weight_n, weight_sum, weight_sumsq, weight_min,
                               weight_max, first_at, last_at, last_received_at, evented_at)
WITH x AS (
    SELECT s.*, CASE WHEN s.clock_synced AND s.measured_at IS NOT NULL THEN s.measured_at ELSE s.received_at END AS at
    FROM sqal_samples_005 s
), g AS (  -- per grade first, then per hour: the grade counts come out as one object
    SELECT date_trunc('hour', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, device_id, lot_id, requested_lot_id,
           COALESCE(grade, 'none') AS grade, count(*) AS n, count(score) AS score_n, sum(score::float8) AS score_sum,
           sum(score::float8 * score) AS score_sumsq, min(score) AS score_min, max(score) AS score_max,
           count(*) FILTER (WHERE weight_g > 0) AS weight_n, sum(weight_g::float8) FILTER (WHERE weight_g > 0) AS weight_sum,
           sum(weight_g::float8 * weight_g) FILTER (WHERE weight_g > 0) AS weight_sumsq,
           min(weight_g) FILTER (WHERE weight_g > 0) AS weight_min, max(weight_g) FILTER (WHERE weight_g > 0) AS weight_max,
           min(at) AS first_at, max(at) AS last_at, max(received_at) AS last_received_at
    FROM x GROUP BY 1, 2, 3, 4, 5
)
SELECT hour, device_id, lot_id, requested_lot_id, sum(n), jsonb_object_agg(grade, n), sum(score_n), sum(score_sum),
       sum(score_sumsq), min(score_min), max(score_max), sum(weight_n), sum(weight_sum), sum(weight_sumsq),
       min(weight_min), max(weight_max), min(first_at), max(last_at), max(last_received_at), max(last_received_at)
FROM g GROUP BY 1, 2, 3, 4;

DROP TABLE sqal_samples_005;
