-- The web portal's logins, kept in the database so that every server sharing it knows them. The cookie is
-- never stored, only its SHA-256; a login ends at expires_at (nanoseconds since the epoch) or at its logout.
CREATE TABLE portal_sessions (
    hash       BLOB PRIMARY KEY,
    csrf       TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at);
