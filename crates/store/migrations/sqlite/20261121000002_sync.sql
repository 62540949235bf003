-- Directory synchronisation: where a profile came from, whether it is disabled, and each source's watermark.
ALTER TABLE profiles ADD COLUMN source TEXT NOT NULL DEFAULT 'import';
ALTER TABLE profiles ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
CREATE INDEX profiles_source ON profiles (source, disabled);

CREATE TABLE sync_state (
    source TEXT PRIMARY KEY,
    watermark TEXT,
    updated_at INTEGER NOT NULL
);
