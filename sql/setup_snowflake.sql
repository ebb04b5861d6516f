-- Snowflake setup for floe, for people who run it by hand (e.g. snowsql -f sql/setup_snowflake.sql).
-- floe creates the same table by itself when it is missing (from the Debezium schema), and runs
-- sql/views.sql when snowflake.views_file points at it. Keep this file and that behaviour in step.

CREATE DATABASE IF NOT EXISTS CDC_WAREHOUSE;
CREATE SCHEMA IF NOT EXISTS CDC_WAREHOUSE.PUBLIC;

CREATE TABLE IF NOT EXISTS CDC_WAREHOUSE.PUBLIC.TRANSACTIONS (
    -- Source columns (PostgreSQL public.transactions).
    TRANSACTION_ID      NUMBER(38,0),
    USER_ID             NUMBER(38,0),
    AMOUNT              NUMBER(12,2),
    CURRENCY            VARCHAR,
    STATUS              VARCHAR,
    PAYMENT_METHOD      VARCHAR,
    DESCRIPTION         VARCHAR,
    METADATA            VARIANT,
    CREATED_AT          TIMESTAMP_TZ(9),
    UPDATED_AT          TIMESTAMP_TZ(9),
    -- CDC columns maintained by floe.
    IS_DELETED          BOOLEAN,          -- soft delete (snowflake.delete_mode = "soft")
    CDC_OPERATION       VARCHAR(1),       -- c, u, d, r (snapshot) or t (truncate)
    CDC_TIMESTAMP       TIMESTAMP_TZ(3),  -- commit time on the source
    CDC_LSN             NUMBER(20,0),     -- source LSN of the last change
    CDC_POSITION        VARCHAR,          -- commit order of the last change; a MERGE never moves a row back
    CDC_KAFKA_PARTITION NUMBER(10,0),
    CDC_KAFKA_OFFSET    NUMBER(20,0),
    CDC_LOADED_AT       TIMESTAMP_TZ(9),  -- when floe loaded the row
    PRIMARY KEY (TRANSACTION_ID)
);

-- Optional, from the guide's optimisation notes:
-- ALTER TABLE CDC_WAREHOUSE.PUBLIC.TRANSACTIONS CLUSTER BY (CREATED_AT, USER_ID);

-- floe's own table: which source table owns each target name, and where a source TRUNCATE
-- cut each table (snowflake.state_table). floe creates it when missing.
CREATE TABLE IF NOT EXISTS CDC_WAREHOUSE.PUBLIC.FLOE_STATE (
    TARGET_TABLE     VARCHAR,
    SOURCE_TABLE     VARCHAR,
    TRUNCATED_BEFORE VARCHAR,
    UPDATED_AT       TIMESTAMP_TZ(9)
);

USE SCHEMA CDC_WAREHOUSE.PUBLIC;

-- The views (same text as sql/views.sql).
CREATE VIEW IF NOT EXISTS ACTIVE_TRANSACTIONS AS
SELECT *
FROM TRANSACTIONS
WHERE IS_DELETED = FALSE;

CREATE VIEW IF NOT EXISTS TRANSACTION_ANALYTICS AS
SELECT
    CAST(CREATED_AT AS DATE) AS TRANSACTION_DATE,
    STATUS,
    COUNT(*) AS TRANSACTION_COUNT,
    SUM(AMOUNT) AS TOTAL_AMOUNT,
    AVG(AMOUNT) AS AVG_AMOUNT,
    MIN(AMOUNT) AS MIN_AMOUNT,
    MAX(AMOUNT) AS MAX_AMOUNT
FROM TRANSACTIONS
WHERE IS_DELETED = FALSE
GROUP BY CAST(CREATED_AT AS DATE), STATUS;

CREATE VIEW IF NOT EXISTS USER_TRANSACTION_SUMMARY AS
SELECT
    USER_ID,
    COUNT(*) AS TRANSACTION_COUNT,
    SUM(AMOUNT) AS TOTAL_SPENT,
    AVG(AMOUNT) AS AVG_TRANSACTION,
    MIN(CREATED_AT) AS FIRST_TRANSACTION,
    MAX(CREATED_AT) AS LAST_TRANSACTION,
    COUNT_IF(STATUS = 'completed') AS COMPLETED_COUNT,
    COUNT_IF(STATUS = 'failed') AS FAILED_COUNT
FROM TRANSACTIONS
WHERE IS_DELETED = FALSE
GROUP BY USER_ID;
