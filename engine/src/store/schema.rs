//! The sessions database schema (PLURNK.md §5) as an ordered list of migrations.
//!
//! Migration `i` (0-based) brings a database from `user_version = i` to `i + 1`; each runs
//! in its own transaction at open together with the `user_version` bump, so a crash mid
//! migration leaves the previous version intact. Never edit a migration that has shipped:
//! append a new one.
//!
//! Deviations from plurnk's genesis schema, each for a reason:
//! - `entries.run_id` exists because a run-scoped entry (a run's scratch) needs its owner;
//!   `CHECK` ties it to `scope = 'run'`.
//! - `loops.max_turns` and `loops.created_at` keep what `loop.run` asked for with the loop,
//!   so a restarted host can drain a queued loop exactly as it was requested.
//! - `entries.updated_at` is a logical write counter bumped by trigger (store-wide maximum
//!   plus one), not a wall-clock time: the catalog is ordered by recency and the order stays
//!   deterministic under the kernel's virtual clock.
//! - `loops.status` also admits 504 (the loop wall-clock timeout added later in E2).

/// `PRAGMA application_id` of an agentos sessions database ("agOS"): a SQLite file with
/// tables and another id is foreign and is refused at open.
pub const APPLICATION_ID: i32 = 0x6167_4f53;

/// The migrations, in order. `user_version` counts how many have been applied.
pub const MIGRATIONS: &[&str] = &[GENESIS];

const GENESIS: &str = r#"
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 1,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    cost_pico INTEGER NOT NULL DEFAULT 0,
    scheme_registry_additions TEXT NOT NULL DEFAULT '[]',
    project_root TEXT,
    settings TEXT NOT NULL DEFAULT '{}'
) STRICT;

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL
        CHECK (parent_run_id IS NULL OR parent_run_id <> id),
    cost_pico INTEGER NOT NULL DEFAULT 0,
    origin TEXT NOT NULL CHECK (origin IN ('model', 'client', 'plurnk'))
) STRICT;
CREATE INDEX runs_session ON runs(session_id, id);

CREATE TABLE loops (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    sequence INTEGER NOT NULL CHECK (sequence >= 1),
    status INTEGER NOT NULL
        CHECK (status IN (100, 102, 200, 202, 413, 429, 499, 500, 504, 508)),
    prompt TEXT NOT NULL,
    flags TEXT NOT NULL DEFAULT '{}',
    max_turns INTEGER,
    attributions TEXT NOT NULL DEFAULT '[]',
    open_paths TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    terminated_at INTEGER,
    terminal_message TEXT,
    UNIQUE (run_id, sequence)
) STRICT;

-- A loop that enters a terminal status is stamped once (202 parks; it is not terminal).
CREATE TRIGGER loops_terminated AFTER UPDATE OF status ON loops
WHEN NEW.status NOT IN (100, 102, 202) AND NEW.terminated_at IS NULL
BEGIN
    UPDATE loops SET terminated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
    WHERE id = NEW.id;
END;

CREATE TABLE turns (
    id INTEGER PRIMARY KEY,
    loop_id INTEGER NOT NULL REFERENCES loops(id) ON DELETE CASCADE,
    sequence INTEGER NOT NULL CHECK (sequence >= 1),
    timestamp INTEGER NOT NULL,
    status INTEGER NOT NULL CHECK (status BETWEEN 100 AND 599),
    usage_prompt INTEGER NOT NULL DEFAULT 0,
    usage_completion INTEGER NOT NULL DEFAULT 0,
    usage_cached INTEGER NOT NULL DEFAULT 0,
    usage_cost_pico INTEGER NOT NULL DEFAULT 0,
    usage_context_size INTEGER,
    packet TEXT NOT NULL DEFAULT '{}',
    finish_reason TEXT,
    model TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    UNIQUE (loop_id, sequence)
) STRICT;

-- Cost rollup: a turn's cost lands on its run and its session, on insert and on update.
CREATE TRIGGER turns_cost_insert AFTER INSERT ON turns
WHEN NEW.usage_cost_pico <> 0
BEGIN
    UPDATE runs SET cost_pico = cost_pico + NEW.usage_cost_pico
    WHERE id = (SELECT run_id FROM loops WHERE id = NEW.loop_id);
    UPDATE sessions SET cost_pico = cost_pico + NEW.usage_cost_pico
    WHERE id = (SELECT r.session_id FROM runs r JOIN loops l ON l.run_id = r.id
                WHERE l.id = NEW.loop_id);
END;
CREATE TRIGGER turns_cost_update AFTER UPDATE OF usage_cost_pico ON turns
WHEN NEW.usage_cost_pico <> OLD.usage_cost_pico
BEGIN
    UPDATE runs SET cost_pico = cost_pico + NEW.usage_cost_pico - OLD.usage_cost_pico
    WHERE id = (SELECT run_id FROM loops WHERE id = NEW.loop_id);
    UPDATE sessions SET cost_pico = cost_pico + NEW.usage_cost_pico - OLD.usage_cost_pico
    WHERE id = (SELECT r.session_id FROM runs r JOIN loops l ON l.run_id = r.id
                WHERE l.id = NEW.loop_id);
END;

CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL CHECK (scope IN ('session', 'run')),
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    run_id INTEGER REFERENCES runs(id) ON DELETE CASCADE,
    scheme TEXT,
    username TEXT,
    password TEXT,
    hostname TEXT,
    port INTEGER,
    pathname TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    attributes TEXT NOT NULL DEFAULT '{}',
    membership_origin TEXT CHECK (membership_origin IN ('git', 'client', 'constraint')),
    deep_hash TEXT,
    synced_sig TEXT,
    updated_at INTEGER NOT NULL DEFAULT 0,
    CHECK ((scope = 'run') = (run_id IS NOT NULL))
) STRICT;
CREATE UNIQUE INDEX entries_session_key
    ON entries(session_id, ifnull(scheme, ''), ifnull(hostname, ''), pathname)
    WHERE scope = 'session';
CREATE UNIQUE INDEX entries_run_key
    ON entries(run_id, ifnull(scheme, ''), ifnull(hostname, ''), pathname)
    WHERE scope = 'run';
CREATE INDEX entries_updated ON entries(updated_at);

CREATE TABLE entry_channels (
    entry_id INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT ''
        CHECK (length(CAST(content AS BLOB)) <= 104857600),
    mimetype TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'static'
        CHECK (state IN ('static', 'active', 'closed', 'errored')),
    PRIMARY KEY (entry_id, name)
) STRICT;

-- Any channel write makes its entry the most recently updated (a logical clock).
CREATE TRIGGER entry_channels_touch_insert AFTER INSERT ON entry_channels
BEGIN
    UPDATE entries SET updated_at = (SELECT ifnull(max(updated_at), 0) + 1 FROM entries)
    WHERE id = NEW.entry_id;
END;
CREATE TRIGGER entry_channels_touch_update AFTER UPDATE ON entry_channels
BEGIN
    UPDATE entries SET updated_at = (SELECT ifnull(max(updated_at), 0) + 1 FROM entries)
    WHERE id = NEW.entry_id;
END;

CREATE TABLE entry_tags (
    entry_id INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (entry_id, tag)
) STRICT;

CREATE TABLE log_entries (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    loop_id INTEGER NOT NULL REFERENCES loops(id) ON DELETE CASCADE,
    turn_id INTEGER NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
    sequence INTEGER NOT NULL CHECK (sequence >= 1),
    at INTEGER NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('model', 'client', 'plurnk', 'plugin')),
    source TEXT,
    op TEXT NOT NULL CHECK (op IN ('PLAN', 'FIND', 'READ', 'EDIT', 'COPY', 'MOVE', 'OPEN',
        'FOLD', 'EXEC', 'KILL', 'SEND', 'WORK', 'FORK', 'error', 'model')),
    suffix TEXT NOT NULL DEFAULT '',
    signal TEXT,
    scheme TEXT,
    username TEXT,
    password TEXT,
    hostname TEXT,
    port INTEGER,
    pathname TEXT,
    search TEXT,
    fragment TEXT,
    line_marker TEXT,
    tx TEXT,
    mimetype_tx TEXT,
    rx TEXT,
    mimetype_rx TEXT,
    status_rx INTEGER NOT NULL CHECK (status_rx BETWEEN 100 AND 599),
    tokens INTEGER NOT NULL DEFAULT 0,
    state TEXT CHECK (state IN ('proposed', 'resolved', 'failed', 'cancelled')),
    outcome TEXT,
    attrs TEXT NOT NULL DEFAULT '{}',
    expanded INTEGER NOT NULL DEFAULT 1 CHECK (expanded IN (0, 1)),
    UNIQUE (turn_id, sequence)
) STRICT;
CREATE INDEX log_entries_run ON log_entries(run_id, id);
CREATE INDEX log_entries_loop ON log_entries(loop_id, id);

-- A log row is a ledger line: who wrote it, where it points and what was sent never change;
-- only its resolution (state, outcome, status_rx, rx) and its fold state may.
CREATE TRIGGER log_entries_immutable BEFORE UPDATE ON log_entries
WHEN NEW.id IS NOT OLD.id OR NEW.run_id IS NOT OLD.run_id OR NEW.loop_id IS NOT OLD.loop_id
  OR NEW.turn_id IS NOT OLD.turn_id OR NEW.sequence IS NOT OLD.sequence OR NEW.at IS NOT OLD.at
  OR NEW.origin IS NOT OLD.origin OR NEW.source IS NOT OLD.source OR NEW.op IS NOT OLD.op
  OR NEW.suffix IS NOT OLD.suffix OR NEW.signal IS NOT OLD.signal
  OR NEW.scheme IS NOT OLD.scheme OR NEW.username IS NOT OLD.username
  OR NEW.password IS NOT OLD.password OR NEW.hostname IS NOT OLD.hostname
  OR NEW.port IS NOT OLD.port OR NEW.pathname IS NOT OLD.pathname
  OR NEW.search IS NOT OLD.search OR NEW.fragment IS NOT OLD.fragment
  OR NEW.line_marker IS NOT OLD.line_marker OR NEW.tx IS NOT OLD.tx
  OR NEW.mimetype_tx IS NOT OLD.mimetype_tx
BEGIN
    SELECT RAISE(ABORT, 'log_entries: identity, target and tx are immutable');
END;

CREATE TABLE schemes (
    name TEXT PRIMARY KEY,
    model_visible INTEGER NOT NULL DEFAULT 1 CHECK (model_visible IN (0, 1)),
    category TEXT NOT NULL CHECK (category IN ('data', 'logging', 'control')),
    default_scope TEXT NOT NULL CHECK (default_scope IN ('session', 'run')),
    default_channel TEXT NOT NULL,
    channel_orientations TEXT NOT NULL DEFAULT '{}',
    writable_by TEXT NOT NULL DEFAULT '[]',
    volatile INTEGER NOT NULL DEFAULT 0 CHECK (volatile IN (0, 1)),
    handler TEXT NOT NULL DEFAULT 'builtin'
) STRICT;

CREATE TABLE providers (
    provider TEXT NOT NULL,
    family TEXT,
    model TEXT NOT NULL,
    context_size INTEGER,
    currency TEXT NOT NULL DEFAULT 'USD',
    PRIMARY KEY (provider, model)
) STRICT;

CREATE TABLE subscriptions (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    entry_id INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    scheme TEXT NOT NULL,
    handle TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    poll_seconds REAL,
    turn_scoped INTEGER NOT NULL DEFAULT 0 CHECK (turn_scoped IN (0, 1)),
    closed_at INTEGER,
    close_status INTEGER,
    CHECK ((closed_at IS NULL) = (close_status IS NULL))
) STRICT;
CREATE UNIQUE INDEX subscriptions_active ON subscriptions(run_id, entry_id)
    WHERE closed_at IS NULL;

CREATE TABLE session_constraints (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    effect TEXT NOT NULL CHECK (effect IN ('pick', 'hide', 'view', 'repo')),
    glob TEXT NOT NULL,
    PRIMARY KEY (session_id, effect, glob)
) STRICT;
"#;
