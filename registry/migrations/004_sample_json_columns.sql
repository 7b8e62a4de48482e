-- 004: sqal_samples.features and raw become json (validated text, kept as written) instead of jsonb.
-- Nothing queries into them: they are read back whole and parsed by the reader. Converting each row
-- to jsonb (and compressing the larger binary form) was most of PostgreSQL's CPU per stored reading
-- on the ingest path (0.16 -> 0.06 ms a row measured; docs/ingest.md, "Benchmark").
ALTER TABLE sqal_samples
    ALTER COLUMN features TYPE json USING features::text::json,
    ALTER COLUMN raw TYPE json USING raw::text::json;
