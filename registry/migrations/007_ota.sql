-- 007: over-the-air updates (docs/ota.md). Releases the gateway serves (verified with the release
-- public key when registered; the gateway never holds the private key), rollouts of a release to a
-- set of devices in waves with a failure threshold, each device's state in a rollout, and the event
-- history of every step: per rollout, and per device whatever its lots (a device's own timeline).

CREATE TABLE ota_releases (
    version       text PRIMARY KEY CHECK (version ~ '^[0-9]{1,4}(\.[0-9]{1,4}){0,3}$'),
    manifest      jsonb NOT NULL,                 -- as signed (the bytes are in the release directory)
    signature     text NOT NULL CHECK (signature ~ '^[0-9a-f]{128}$'),
    size          bigint NOT NULL CHECK (size > 0),   -- bytes of files a board downloads
    files         integer NOT NULL CHECK (files > 0),
    registered_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ota_rollouts (
    id           bigserial PRIMARY KEY,
    version      text NOT NULL REFERENCES ota_releases (version),
    state        text NOT NULL CHECK (state IN ('created', 'running', 'stopped', 'completed', 'cancelled',
                                                 'rolled_back', 'interrupted')),
    reason       text,
    selector     jsonb NOT NULL,                  -- how the devices were chosen (site, from_version, ids)
    waves        jsonb NOT NULL,                  -- cumulative device counts per wave
    max_failures double precision NOT NULL CHECK (max_failures >= 0),
    probation_s  integer CHECK (probation_s BETWEEN 10 AND 3600),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ota_rollout_devices (
    rollout_id bigint NOT NULL REFERENCES ota_rollouts (id),
    device_id  text NOT NULL,
    position   integer NOT NULL,                  -- order of the rollout's waves
    wave       integer,                           -- null: not reached
    state      text NOT NULL,
    progress   integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    reason     text,
    attempts   integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rollout_id, device_id)
);

CREATE TABLE ota_events (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    rollout_id bigint REFERENCES ota_rollouts (id),
    device_id  text,                              -- null: an event of the rollout itself
    kind       text NOT NULL CHECK (length(kind) BETWEEN 1 AND 48),
    data       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ota_events_rollout_idx ON ota_events (rollout_id, id);
CREATE INDEX ota_events_device_idx ON ota_events (device_id, at, id) WHERE device_id IS NOT NULL;
