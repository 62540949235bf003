-- Verification methods beyond email: phone numbers share `address` (E.164); an authenticator app's key
-- and a security-question set's answer hashes live in `secret` (JSON); `last_step` is the last
-- authenticator time step accepted (single use); `verified_at` doubles as "last confirmed".
ALTER TABLE methods ADD COLUMN secret TEXT;
ALTER TABLE methods ADD COLUMN last_step INTEGER;

-- Single-use markers (proof-of-work solutions), forgotten once they expire.
CREATE TABLE used_once (
    key TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);

-- "This wasn't me" links in reset / change notifications (hashed, single use).
CREATE TABLE report_links (
    token_hash BLOB PRIMARY KEY,
    login TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

-- Accounts flagged for the helpdesk (self-service is off for them until cleared).
CREATE TABLE flags (
    login TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
