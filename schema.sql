-- The application's tables. Idempotent: applying it again changes nothing.
-- Apply over the DIRECT url (never through the Worker):  uv run python -m devstack.migrate

CREATE TABLE IF NOT EXISTS users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text        NOT NULL CHECK (email = lower(email) AND length(email) <= 254),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE IF NOT EXISTS posts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    author_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title         text        NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body          text        NOT NULL DEFAULT '',
    published     boolean     NOT NULL DEFAULT false,
    published_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT posts_published_has_time CHECK (NOT published OR published_at IS NOT NULL)
);
-- A user's posts page by id; the published listing pages by id over published rows only.
CREATE INDEX IF NOT EXISTS posts_author_id_id_idx ON posts (author_id, id);
CREATE INDEX IF NOT EXISTS posts_published_id_idx ON posts (id) WHERE published;

CREATE TABLE IF NOT EXISTS logs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    level       text        NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
    message     text        NOT NULL,
    meta        jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- GET /logs?level= pages newest first within a level.
CREATE INDEX IF NOT EXISTS logs_level_id_idx ON logs (level, id DESC);

-- Idempotency-Key (see src/idempotency.py): the rows a keyed write returned, stored in
-- the write's own transaction, so a committed write always has its key. Kept 24 hours.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          text        PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint  text        NOT NULL,
    rows         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at_idx ON idempotency_keys (created_at);

-- Runs first in a keyed write's transaction. Raises IK001 while another request with
-- the key is running (it holds the key's advisory lock), IK002 when the key was used
-- for a different request, IK003 when the key's outcome is stored (the caller replays
-- it); otherwise the write goes ahead. Also removes up to 100 expired keys.
CREATE OR REPLACE FUNCTION idempotency_claim(claimed text, wanted text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    stored text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('idempotency:' || claimed, 0)) THEN
        RAISE EXCEPTION 'a request with this Idempotency-Key is still running'
            USING ERRCODE = 'IK001';
    END IF;
    DELETE FROM idempotency_keys
        WHERE key = claimed AND created_at < now() - interval '24 hours';
    DELETE FROM idempotency_keys WHERE key IN (
        SELECT key FROM idempotency_keys WHERE created_at < now() - interval '24 hours'
        LIMIT 100 FOR UPDATE SKIP LOCKED);
    SELECT fingerprint INTO stored FROM idempotency_keys WHERE key = claimed;
    IF stored IS NULL THEN
        RETURN;
    ELSIF stored <> wanted THEN
        RAISE EXCEPTION 'this Idempotency-Key was used for a different request'
            USING ERRCODE = 'IK002';
    END IF;
    RAISE EXCEPTION 'this Idempotency-Key already has an outcome' USING ERRCODE = 'IK003';
END
$$;
