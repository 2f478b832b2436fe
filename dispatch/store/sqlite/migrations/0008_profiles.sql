-- Pod profiles: the names a worker offers (JSON array, NULL for none) and its override allow-list (JSON
-- api.OverridePolicy, NULL for none); an operation's profile (NULL for none) and overrides (JSON, NULL for none).
ALTER TABLE workers ADD COLUMN profiles TEXT;
ALTER TABLE workers ADD COLUMN allow_overrides TEXT;
ALTER TABLE operations ADD COLUMN profile TEXT;
ALTER TABLE operations ADD COLUMN overrides TEXT;
