-- The guide's source table. Used by the compose file (docker-entrypoint-initdb.d) and by
-- scripts/stack.sh on the local stack, so both create the same table.
CREATE TABLE IF NOT EXISTS public.transactions (
    transaction_id BIGSERIAL PRIMARY KEY,
    user_id        INTEGER NOT NULL,
    amount         NUMERIC(12,2),
    currency       CHAR(3),
    status         VARCHAR(20),
    payment_method VARCHAR(30),
    description    TEXT,
    metadata       JSONB,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ
);

-- Every type the Debezium PostgreSQL connector emits, for the type-fidelity tests: each row of
-- this table must reach Snowflake with the right type and the same value, from JSON and Avro.
DO $$ BEGIN
    CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
CREATE TABLE IF NOT EXISTS public.all_types (
    id             SERIAL PRIMARY KEY,
    c_smallint     SMALLINT,
    c_integer      INTEGER,
    c_bigint       BIGINT,
    c_numeric      NUMERIC(38,10),
    c_numeric38    NUMERIC(38,2),
    c_numeric_var  NUMERIC,
    c_real         REAL,
    c_double       DOUBLE PRECISION,
    c_boolean      BOOLEAN,
    c_char         CHAR(5),
    c_varchar      VARCHAR(50),
    c_text         TEXT,
    c_bytea        BYTEA,
    c_date         DATE,
    c_time         TIME,
    c_time3        TIME(3),
    c_timetz       TIMETZ,
    c_timestamp    TIMESTAMP,
    c_timestamptz  TIMESTAMPTZ,
    c_interval     INTERVAL,
    c_uuid         UUID,
    c_json         JSON,
    c_jsonb        JSONB,
    c_int_array    INTEGER[],
    c_text_array   TEXT[],
    c_enum         public.mood,
    c_money        MONEY,
    c_inet         INET
);

-- Schema evolution: the tests add, widen and drop columns of this table while it is loaded
-- (each run names its columns after itself and drops them at the end).
CREATE TABLE IF NOT EXISTS public.evolving (
    id   SERIAL PRIMARY KEY,
    name TEXT,
    qty  INTEGER
);

-- Many tables: a small shop with a composite key and a table without a primary key (loaded
-- append-only). Debezium writes one topic per table (cdc.shop.*, cdcavro.shop.*).
CREATE SCHEMA IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.customers (
    customer_id SERIAL PRIMARY KEY,
    email       TEXT NOT NULL,
    name        TEXT
);
CREATE TABLE IF NOT EXISTS shop.orders (
    order_id    BIGSERIAL PRIMARY KEY,
    customer_id INTEGER NOT NULL,
    placed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    status      TEXT
);
CREATE TABLE IF NOT EXISTS shop.order_lines (
    order_id BIGINT NOT NULL,
    line_no  INTEGER NOT NULL,
    sku      TEXT,
    qty      INTEGER,
    price    NUMERIC(10,2),
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE IF NOT EXISTS shop.page_views (
    viewed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    customer_id INTEGER,
    url         TEXT
);
