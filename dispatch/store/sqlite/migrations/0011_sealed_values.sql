-- Sensitive values are stored sealed under keys kept beside the database (keyring.go): each sealed column
-- gets the id of its key, and triggers record the key of every sealed value an operation's end erases (or a
-- DELETE removes) in ended_keys, for the writer to retire those keys.
ALTER TABLE operations ADD COLUMN secrets_kid INTEGER;
ALTER TABLE operations ADD COLUMN sealing_kid INTEGER;
CREATE INDEX operations_secrets_kid ON operations (secrets_kid) WHERE secrets IS NOT NULL;
CREATE INDEX operations_sealing_kid ON operations (sealing_kid) WHERE sealing_key IS NOT NULL;
CREATE TABLE ended_keys (kid INTEGER PRIMARY KEY);
CREATE TRIGGER operations_secrets_ended AFTER UPDATE OF secrets ON operations
    WHEN OLD.secrets IS NOT NULL AND NEW.secrets IS NULL AND OLD.secrets_kid IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO ended_keys (kid) VALUES (OLD.secrets_kid);
END;
CREATE TRIGGER operations_sealing_ended AFTER UPDATE OF sealing_key ON operations
    WHEN OLD.sealing_key IS NOT NULL AND NEW.sealing_key IS NULL AND OLD.sealing_kid IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO ended_keys (kid) VALUES (OLD.sealing_kid);
END;
CREATE TRIGGER operations_sealed_deleted AFTER DELETE ON operations
    WHEN OLD.secrets IS NOT NULL OR OLD.sealing_key IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO ended_keys (kid) SELECT OLD.secrets_kid WHERE OLD.secrets IS NOT NULL AND OLD.secrets_kid IS NOT NULL;
    INSERT OR IGNORE INTO ended_keys (kid) SELECT OLD.sealing_kid WHERE OLD.sealing_key IS NOT NULL AND OLD.sealing_kid IS NOT NULL;
END;
