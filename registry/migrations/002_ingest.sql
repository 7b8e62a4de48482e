-- 002: ingest bookkeeping. Rejected messages (kept with their raw bytes and a precise reason) and
-- the devices table fed by status (birth / last will), telemetry and the samples themselves.

CREATE TABLE ingest_rejects (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    source       text NOT NULL CHECK (source IN ('mqtt', 'ws')),
    topic        text,                         -- MQTT topic, or the WebSocket path
    device_id    text,                         -- from the topic/path when it parsed, else NULL
    reason_key   text NOT NULL,                -- the field part of the reason, indices removed: 'tof.dist'
    reason       text NOT NULL,                -- ContractError reason, verbatim
    payload      bytea NOT NULL,               -- raw bytes, truncated to payload_truncated_at
    payload_size integer NOT NULL CHECK (payload_size >= 0),   -- size before truncation
    truncated    boolean NOT NULL DEFAULT false
);
CREATE INDEX ingest_rejects_at_idx ON ingest_rejects (received_at);
CREATE INDEX ingest_rejects_reason_idx ON ingest_rejects (reason_key, received_at);
CREATE INDEX ingest_rejects_device_idx ON ingest_rejects (device_id, received_at) WHERE device_id IS NOT NULL;

CREATE TABLE devices (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$'),
    site_code       text,                      -- from the id (domain.md section 6)
    location        text,
    firmware        text,
    boot            bigint,
    state           text NOT NULL DEFAULT 'unknown' CHECK (state IN ('online', 'offline', 'unknown')),
    state_at        timestamptz,               -- when the gateway applied the last status
    status_ts       timestamptz,               -- the status message's own ts (device clock)
    degraded        text[] NOT NULL DEFAULT '{}',
    safe_mode       boolean NOT NULL DEFAULT false,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now(),
    last_sample_at  timestamptz,
    samples_stored  bigint NOT NULL DEFAULT 0,
    duplicates      bigint NOT NULL DEFAULT 0,
    rejects         bigint NOT NULL DEFAULT 0,
    telemetry       jsonb,                     -- last telemetry object as decoded
    telemetry_at    timestamptz,
    last_result     jsonb                      -- last command result as decoded
);
CREATE INDEX devices_site_idx ON devices (site_code);
