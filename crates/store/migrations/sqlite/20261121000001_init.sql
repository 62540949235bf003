-- Gatehouse store, SQLite. Times are Unix milliseconds (UTC), hashes are raw bytes.
CREATE TABLE instance (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key BLOB NOT NULL
);

CREATE TABLE profiles (
    login TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    email TEXT,
    mobile_phone TEXT,
    groups TEXT NOT NULL DEFAULT '[]',
    updated_at INTEGER NOT NULL
);

CREATE TABLE methods (
    id TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    verified_at INTEGER,
    code_hash BLOB,
    code_expires_at INTEGER,
    code_attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX methods_login ON methods (login);

CREATE TABLE flows (
    token_hash BLOB PRIMARY KEY,
    id TEXT NOT NULL,
    login TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX flows_expires ON flows (expires_at);

CREATE TABLE failures (
    key TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX failures_key ON failures (key, at);

CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY,
    login TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_login ON sessions (login);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    activity TEXT NOT NULL,
    actor TEXT NOT NULL,
    target TEXT,
    result TEXT NOT NULL,
    reason TEXT,
    method TEXT,
    client_ip TEXT,
    user_agent TEXT,
    flow_id TEXT,
    directory TEXT
);
CREATE INDEX audit_at ON audit (at);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at INTEGER,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (sent_at, next_attempt_at);
