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
