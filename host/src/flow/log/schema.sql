CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    listener TEXT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    control_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    route TEXT NOT NULL,
    destination TEXT NOT NULL,
    status TEXT NOT NULL,
    ack TEXT NOT NULL,
    detections TEXT NOT NULL,
    latency_us INTEGER NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0,
    completeness TEXT NOT NULL DEFAULT '',
    reprocess_of INTEGER,
    body_ref INTEGER,
    body_len INTEGER
);
CREATE INDEX IF NOT EXISTS messages_time ON messages(received_at);
CREATE INDEX IF NOT EXISTS messages_sender ON messages(sender, id);
CREATE INDEX IF NOT EXISTS messages_control ON messages(control_id, id);
CREATE INDEX IF NOT EXISTS messages_patient ON messages(patient_id, id);
CREATE INDEX IF NOT EXISTS messages_status ON messages(status, id);
CREATE INDEX IF NOT EXISTS messages_destination ON messages(destination, id);
CREATE INDEX IF NOT EXISTS messages_route ON messages(route, id);
CREATE TABLE IF NOT EXISTS journal_links (
    journal_id INTEGER PRIMARY KEY,
    id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_links_message ON journal_links(id);
CREATE TABLE IF NOT EXISTS message_detections (
    detection TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (detection, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS body_segments (
    seg INTEGER PRIMARY KEY,
    max_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS message_bodies (
    id INTEGER PRIMARY KEY,
    received BLOB NOT NULL,
    stages TEXT NOT NULL,
    issues TEXT NOT NULL,
    answer BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    message_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    destination TEXT NOT NULL,
    result TEXT NOT NULL,
    class TEXT NOT NULL,
    answer BLOB
);
CREATE INDEX IF NOT EXISTS attempts_message ON attempts(message_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
);
