-- The web portal's logins, as SQLite's 0010_portal_sessions.sql: every server sharing the database knows
-- them. The cookie is never stored, only its SHA-256; a login ends at expires_at or at its logout.
CREATE TABLE portal_sessions (
    hash       BYTEA PRIMARY KEY,
    csrf       TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at);
