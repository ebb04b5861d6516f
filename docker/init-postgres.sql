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
