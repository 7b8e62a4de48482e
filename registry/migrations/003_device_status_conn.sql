-- 003: order device status messages by (boot, conn) -- the broker connection number within a boot --
-- rather than by the device clock: a connection's last will carries the same (conn, ts) as its birth.
ALTER TABLE devices ADD COLUMN status_conn bigint CHECK (status_conn >= 1);
