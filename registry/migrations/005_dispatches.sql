-- 005: traceability one step back and one step forward (Regulation (EU) 178/2002 art. 18, 931/2011).
-- `farms`: the supplier a lot comes from (name and address, keyed by the lot's farmer_id).
-- `dispatches` + `dispatch_lines`: consignments of products to a recipient, each record holding
-- what 931/2011 art. 3 asks for: sender and recipient name and address, date, and per line the
-- product (description and lot reference through products/lots) and the quantity.
-- Dispatch records are kept as written (a wrong record is corrected by a new one, never edited).

CREATE TABLE farms (
    farmer_id  text PRIMARY KEY CHECK (length(farmer_id) BETWEEN 1 AND 64),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    address    text NOT NULL CHECK (length(address) BETWEEN 1 AND 500),
    gln        text CHECK (gln ~ '^[0-9]{13}$'),          -- GS1 Global Location Number, when the farm has one
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dispatches (
    id                bigserial PRIMARY KEY,
    reference         text NOT NULL UNIQUE CHECK (reference ~ '^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$'),
    dispatched_at     timestamptz NOT NULL,
    sender_name       text NOT NULL CHECK (length(sender_name) BETWEEN 1 AND 200),
    sender_address    text NOT NULL CHECK (length(sender_address) BETWEEN 1 AND 500),
    sender_gln        text CHECK (sender_gln ~ '^[0-9]{13}$'),
    recipient_name    text NOT NULL CHECK (length(recipient_name) BETWEEN 1 AND 200),
    recipient_address text NOT NULL CHECK (length(recipient_address) BETWEEN 1 AND 500),
    recipient_gln     text CHECK (recipient_gln ~ '^[0-9]{13}$'),
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dispatches_at_idx ON dispatches (dispatched_at, id);

CREATE TABLE dispatch_lines (
    dispatch_id bigint NOT NULL REFERENCES dispatches (id),
    product_id  bigint NOT NULL REFERENCES products (id),
    lot_id      text NOT NULL REFERENCES lots (id),   -- the product's lot, kept for one-step queries per lot
    quantity    integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000000),  -- units of the product
    PRIMARY KEY (dispatch_id, product_id)
);
CREATE INDEX dispatch_lines_lot_idx ON dispatch_lines (lot_id);
CREATE INDEX dispatch_lines_product_idx ON dispatch_lines (product_id);

CREATE FUNCTION dispatch_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (traceability records are kept as written): % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER dispatches_no_update_delete
    BEFORE UPDATE OR DELETE ON dispatches
    FOR EACH ROW EXECUTE FUNCTION dispatch_records_append_only();
CREATE TRIGGER dispatches_no_truncate
    BEFORE TRUNCATE ON dispatches
    FOR EACH STATEMENT EXECUTE FUNCTION dispatch_records_append_only();
CREATE TRIGGER dispatch_lines_no_update_delete
    BEFORE UPDATE OR DELETE ON dispatch_lines
    FOR EACH ROW EXECUTE FUNCTION dispatch_records_append_only();
CREATE TRIGGER dispatch_lines_no_truncate
    BEFORE TRUNCATE ON dispatch_lines
    FOR EACH STATEMENT EXECUTE FUNCTION dispatch_records_append_only();
