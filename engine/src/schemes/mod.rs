//! # Schemes: where statements point
//!
//! Every target is an address in a URI scheme (PLURNK.md §2). This module owns the
//! [`SchemeRegistry`] of manifests (name, channels, default channel, category, scope,
//! writers, affinity flags, the one-line example taught every turn, the deep documentation
//! materialised at `plurnk:///docs/<name>.md`), the address rules of §2.1 ([`Address`]:
//! `known://x`, `known:///x` and `/x`-in-`known` are one entry; `run://` keeps its authority
//! as the run name; bare paths are project files) and the op implementations of the entry
//! schemes ([`entry`]: `known`, `unknown`, `plurnk`), the ledger ([`log`]) and the
//! engine-orchestrated COPY/MOVE ([`copy`]).
//!
//! **Invariants:** the writer check (`writable_by`) and the loop-flag gate run before any
//! scheme code; a scheme never writes outside the [`world::TurnWorld`] it is handed (so a
//! turn's effects commit with its rows or not at all); every op answers a status of
//! PLURNK.md §1.6 and bad input is a status, never a panic.
//!
//! **API boundary:** [`SchemeRegistry::builtin`], [`Manifest`], [`Address::resolve`], and
//! the dispatch entry point in [`dispatch`].

pub mod copy;
pub mod dispatch;
pub mod effect;
pub mod entry;
pub mod exec;
pub mod file;
pub mod log;
pub mod run;
pub mod world;

use serde::Serialize;

use crate::grammar::{GbnfOptions, Op, ParsedPath};
use crate::store::{EntryKey, Origin, Scope};

/// What a scheme holds (§2.2 `category`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Entries.
    Data,
    /// Log rows.
    Logging,
    /// Actors (run://): owns no entries of its own name.
    Control,
}

/// A scheme's affinity flags: which loop flags switch it off (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemeFlags {
    /// Dropped in `mode = ask`.
    pub excluded_in_ask: bool,
    /// Dropped under `noWeb`.
    pub requires_web: bool,
    /// Dropped under `noInteraction`.
    pub requires_interaction: bool,
    /// Its side effects propose (202).
    pub proposes: bool,
}

/// A scheme's manifest (§2.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The URI scheme.
    pub name: &'static str,
    /// Channels and their mimetypes; empty = dynamic per entry.
    pub channels: &'static [(&'static str, &'static str)],
    /// The channel used without a `#fragment`.
    pub default_channel: &'static str,
    /// What it holds.
    pub category: Category,
    /// Default entry scope.
    pub scope: Scope,
    /// Who may mutate it.
    pub writable_by: &'static [Origin],
    /// Fast-changing content (sorted last for prompt-cache stability).
    pub volatile: bool,
    /// Shown to the model.
    pub model_visible: bool,
    /// Entries land folded.
    pub folded_by_default: bool,
    /// Affinity flags.
    pub flags: SchemeFlags,
    /// The ops the model may point at this scheme (others answer 501). The turn grammar a
    /// loop is constrained by offers exactly the union over its schemes
    /// ([`SchemeRegistry::gbnf_options`]), so it cannot drift from what dispatch serves.
    pub ops: &'static [Op],
    /// One hot-path usage line, taught every turn.
    pub example: &'static str,
    /// The deep documentation, READ on demand at `plurnk:///docs/<name>.md`.
    pub documentation: &'static str,
}

impl Manifest {
    /// The manifest as a `schemes` table row.
    pub fn record(&self) -> crate::store::SchemeRecord {
        let channels: serde_json::Map<String, serde_json::Value> = self
            .channels
            .iter()
            .map(|(c, m)| ((*c).to_owned(), serde_json::Value::from(*m)))
            .collect();
        let writers: Vec<&str> = self.writable_by.iter().map(|o| o.as_str()).collect();
        crate::store::SchemeRecord {
            name: self.name.to_owned(),
            model_visible: self.model_visible,
            category: match self.category {
                Category::Data => "data",
                Category::Logging => "logging",
                Category::Control => "control",
            }
            .to_owned(),
            default_scope: self.scope,
            default_channel: self.default_channel.to_owned(),
            channels_json: serde_json::Value::Object(channels).to_string(),
            writable_by_json: serde_json::json!(writers).to_string(),
            volatile: self.volatile,
        }
    }

    /// Whether `origin` may mutate this scheme's entries.
    pub fn writable(&self, origin: Origin) -> bool {
        self.writable_by.contains(&origin)
    }
}

const MD: &str = "text/markdown";

/// No affinity: the scheme stays in every loop.
const NO_FLAGS: SchemeFlags = SchemeFlags {
    excluded_in_ask: false,
    requires_web: false,
    requires_interaction: false,
    proposes: false,
};

/// A session-scoped markdown scheme of data entries written by the model, clients and the
/// engine (the shape `known` and `unknown` share).
const fn data_scheme(
    name: &'static str,
    example: &'static str,
    documentation: &'static str,
) -> Manifest {
    Manifest {
        name,
        channels: &[("body", MD)],
        default_channel: "body",
        category: Category::Data,
        scope: Scope::Session,
        writable_by: &[Origin::Model, Origin::Client, Origin::Plurnk],
        volatile: false,
        model_visible: true,
        folded_by_default: false,
        flags: NO_FLAGS,
        ops: &[
            Op::Find,
            Op::Read,
            Op::Edit,
            Op::Copy,
            Op::Move,
            Op::Kill,
            Op::Send,
        ],
        example,
        documentation,
    }
}

/// The schemes this build ships.
pub static BUILTIN: [Manifest; 7] = [
    Manifest {
        name: "run",
        channels: &[("body", MD)],
        default_channel: "body",
        category: Category::Control,
        scope: Scope::Run,
        writable_by: &[Origin::Model, Origin::Client],
        volatile: false,
        model_visible: true,
        folded_by_default: false,
        flags: NO_FLAGS,
        ops: &[Op::Read, Op::Edit, Op::Copy, Op::Send, Op::Kill],
        example: "<<EDIT(run://tester):Run the tests and report failures.:EDIT",
        documentation: "# run://\n\nSibling runs of this session, and scratch space per run.\n\n\
- `EDIT(run://name):task:EDIT` starts a new run on a task (201; 409 if that run is live; 508 \
when the session runs too many).\n- `COPY(run://self):prompt:COPY` forks this run: a copy of \
your log continues on the prompt.\n- `SEND(run://name):message:SEND` tells it something.\n- \
`KILL(run://name)::KILL` stops it.\n- `READ(run://name)::READ` collects its result (425 while \
it is still running).\n- `run:///notes.md` is your own scratch (EDIT/READ/KILL); \
`READ(run://name/notes.md)::READ` reads another run's.\n",
    },
    Manifest {
        name: "exec",
        channels: &[("stdout", "text/plain"), ("stderr", "text/plain")],
        default_channel: "stdout",
        category: Category::Data,
        scope: Scope::Run,
        writable_by: &[Origin::Model, Origin::Client],
        volatile: true,
        model_visible: true,
        folded_by_default: true,
        flags: SchemeFlags {
            excluded_in_ask: true,
            proposes: true,
            ..NO_FLAGS
        },
        ops: &[Op::Exec, Op::Read, Op::Send, Op::Kill],
        example: "<<EXEC[sh]<60>:cargo test -q:EXEC",
        documentation: "# EXEC and streams\n\n`EXEC[sh](dir)<T>:command:EXEC` runs a command in \
the project (optional working directory `dir`, optional timeout `T` seconds; executors `sh`, \
`python`, `node` where installed). It proposes first (202); once accepted it answers 102 and runs \
sandboxed: the project root is writable, the system read-only, there is no network. Its output \
streams into `sh:///<loop>/<turn>/<seq>` (channels `stdout`, `stderr`), shown to you as READ \
rows before your next turn and opened when the command ends.\n\n- `SEND[200](sh:///L/T/S):text:SEND` \
writes a line to its stdin; `SEND[204](sh:///L/T/S)::SEND` closes stdin.\n- `SEND[499](sh:///L/T/S)::SEND` \
or `KILL(sh:///L/T/S)::KILL` stops it.\n",
    },
    Manifest {
        name: "file",
        channels: &[],
        default_channel: "body",
        category: Category::Data,
        scope: Scope::Session,
        writable_by: &[Origin::Model, Origin::Client],
        volatile: false,
        model_visible: true,
        folded_by_default: false,
        flags: SchemeFlags {
            proposes: true,
            ..NO_FLAGS
        },
        ops: &[Op::Find, Op::Read, Op::Edit, Op::Copy, Op::Move, Op::Kill],
        example: "<<READ(src/main.rs)<1,40>::READ",
        documentation: "# Project files (bare paths)\n\nFiles of the project, named by their \
path relative to the project root (`src/main.rs`, never `file://`). Members are the git \
repository's tracked and untracked-not-ignored files plus what the session picks; others answer \
403, binary files 415.\n\n- `READ(path)<N,M>::READ` reads lines; a glob (`src/**/*.rs`) reads \
every match.\n- `FIND(src/**):FIND` lists members.\n- `EDIT(path)<L>:content:EDIT` proposes \
a change (202): nothing is written until it is accepted; a file changed on disk since you read \
it answers 409 write_conflict.\n- `KILL(path)::KILL` proposes deleting it.\n- \
`COPY(path)<N,M>:known:///notes.md:COPY` copies a file (or lines of it) into an entry; a COPY or \
MOVE that writes or deletes a file (`COPY(known:///draft.md):docs/draft.md:COPY`, \
`MOVE(old.txt):new.txt:MOVE`) proposes (202) like EDIT.\n",
    },
    data_scheme(
        "known",
        "<<EDIT[tag](known:///topic/fact.md):What you learned and where.:EDIT",
        "# known://\n\nThe session's long-term knowledge base: markdown or JSON entries \
with tags, shared by every run of the session.\n\n- `EDIT[tags](known:///path.md)<L>:content:EDIT` \
writes (201 created, 200 updated, 304 unchanged); `<N>`, `<N,M>`, `<0>`, `<-1>`, `<N.5>` edit \
lines; `.json` entries edit by item.\n- `READ(known:///path.md)<N,M>::READ` reads lines; a glob \
or folder target reads every match.\n- `FIND[tag](known:///**):matcher:FIND` lists entries.\n- \
`COPY`/`MOVE` take the destination URI as body; `KILL(known:///path.md)::KILL` deletes.\n",
    ),
    data_scheme(
        "unknown",
        "<<EDIT[tag](unknown:///question.md):An open question to settle.:EDIT",
        "# unknown://\n\nOpen questions and the decomposition of the task: one entry per \
question, with tags. Same operations as known://; KILL an entry once it is answered (and write \
the answer to known://).\n",
    ),
    Manifest {
        name: "log",
        channels: &[("body", MD)],
        default_channel: "body",
        category: Category::Logging,
        scope: Scope::Run,
        writable_by: &[Origin::Plurnk],
        volatile: true,
        model_visible: true,
        folded_by_default: false,
        flags: NO_FLAGS,
        ops: &[Op::Find, Op::Read, Op::Open, Op::Fold],
        example: "<<FOLD(log:///1/**/READ)::FOLD",
        documentation:
            "# log://\n\nThis run's actions, one row per op at `log:///<loop>/<turn>/<seq>/<OP>`. \
Read-only. `READ(log:///1/2/3)::READ` shows a row; `FIND(log:///**):matcher:FIND` lists rows; \
`FOLD(log:///1/**)::FOLD` collapses rows to one line and `OPEN` expands them again — both only \
change what the next turn shows.\n",
    },
    Manifest {
        name: "plurnk",
        channels: &[("body", MD)],
        default_channel: "body",
        category: Category::Data,
        scope: Scope::Session,
        writable_by: &[Origin::Plurnk, Origin::Plugin],
        volatile: false,
        model_visible: true,
        folded_by_default: false,
        flags: NO_FLAGS,
        ops: &[Op::Find, Op::Read, Op::Copy],
        example: "<<READ(plurnk:///docs/known.md)::READ",
        documentation:
            "# plurnk://\n\nRuntime entries, read-only to the model: the prompts of this run \
(`plurnk:///prompt/<loop>/<n>`) and the documentation of every scheme \
(`plurnk:///docs/<scheme>.md`) and operator doc (`plurnk:///<ALIAS>.md`).\n",
    },
];

/// The manifests available to a loop.
#[derive(Debug, Clone)]
pub struct SchemeRegistry {
    manifests: Vec<&'static Manifest>,
}

impl SchemeRegistry {
    /// Every built-in scheme.
    pub fn builtin() -> Self {
        SchemeRegistry {
            manifests: BUILTIN.iter().collect(),
        }
    }

    /// The manifest of `name`.
    pub fn get(&self, name: &str) -> Option<&'static Manifest> {
        self.manifests.iter().copied().find(|m| m.name == name)
    }

    /// All manifests, in registration order.
    pub fn all(&self) -> impl Iterator<Item = &'static Manifest> + '_ {
        self.manifests.iter().copied()
    }

    /// The schemes a loop with `flags` may use (`resolveForLoop`): ask mode drops
    /// `excluded_in_ask`, `noWeb` drops `requires_web`, `noInteraction` drops
    /// `requires_interaction`. A dropped scheme answers 403.
    pub fn resolve_for_loop(&self, flags: &crate::turn::LoopFlags) -> SchemeRegistry {
        SchemeRegistry {
            manifests: self
                .manifests
                .iter()
                .copied()
                .filter(|m| {
                    !(flags.is_ask() && m.flags.excluded_in_ask
                        || flags.no_web && m.flags.requires_web
                        || flags.no_interaction && m.flags.requires_interaction)
                })
                .collect(),
        }
    }

    /// Drops the schemes whose device the loop does not hold (a headless session has no
    /// `fs` device, so no `file` scheme): they answer 403.
    pub fn for_devices(mut self, devices: &dispatch::Devices) -> SchemeRegistry {
        self.manifests.retain(|m| {
            !(m.name == "file" && devices.fs.is_none()
                || m.name == "exec" && devices.exec.is_none())
        });
        self
    }

    /// The turn grammar's knobs for a loop holding these schemes, over `base`: the batch ops
    /// are the union of the model-visible schemes' [`Manifest::ops`] (so EXEC only with the
    /// `exec` scheme — never in ask mode or a headless session — and no WORK or FORK, which
    /// nothing serves), EXEC's executor is one of [`exec::RUNTIMES`], and the schemes whose
    /// URLs take no authority (`known:///x`, `sh:///1/2/3`) are the loop's own.
    pub fn gbnf_options(&self, base: GbnfOptions) -> GbnfOptions {
        let visible: Vec<&Manifest> = self.all().filter(|m| m.model_visible).collect();
        let ops: Vec<Op> = Op::ALL
            .into_iter()
            .filter(|op| *op != Op::Plan && visible.iter().any(|m| m.ops.contains(op)))
            .collect();
        let exec = ops.contains(&Op::Exec);
        let mut plain: Vec<String> = visible
            .iter()
            .filter(|m| !matches!(m.name, "file" | "exec"))
            .map(|m| m.name.to_owned())
            .collect();
        if exec {
            plain.extend(exec::RUNTIMES.map(String::from));
        }
        GbnfOptions {
            ops,
            executors: if exec {
                exec::RUNTIMES.map(String::from).to_vec()
            } else {
                Vec::new()
            },
            plain_schemes: plain,
            ..base
        }
    }

    /// The schemes section: one example line per model-visible scheme.
    pub fn teach(&self) -> String {
        let mut s = String::new();
        for m in self.all().filter(|m| m.model_visible) {
            s.push_str("* ");
            s.push_str(m.example);
            s.push_str("  (docs: plurnk:///docs/");
            s.push_str(m.name);
            s.push_str(".md)\n");
        }
        s
    }
}

/// Where a target points, after the address rules of §2.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// An entry (or a glob/folder of entries) of a registered entry scheme.
    Entry {
        /// Scheme name.
        scheme: String,
        /// Normalised path, always starting with `/` (may hold glob characters).
        pathname: String,
        /// Channel (`#fragment`).
        channel: Option<String>,
    },
    /// This run's log rows (`log:///L/T/S[/OP]`, globs allowed).
    Log {
        /// Path after `log://`, starting with `/`.
        pathname: String,
    },
    /// A sibling run or its scratch (`run://name[/path]`).
    Run {
        /// The run name (`self`/`.` for the current run).
        name: String,
        /// Scratch path, if any.
        path: Option<String>,
    },
    /// A bare path: a project file.
    File {
        /// The path as written (relative to the project root).
        path: String,
    },
    /// A path-name regex scope `#pattern#flags`.
    Regex {
        /// Pattern.
        pattern: String,
        /// Flags.
        flags: String,
    },
    /// A command's output stream `<runtime>:///<loop>/<turn>/<seq>[#channel]`.
    Stream {
        /// `sh`, `python`, `node`.
        runtime: String,
        /// `/L/T/S`.
        path: String,
        /// `stdout` / `stderr`.
        channel: Option<String>,
    },
    /// A scheme this build does not implement (`http`, …).
    Unsupported {
        /// Its name.
        scheme: String,
    },
}

impl Address {
    /// Applies the address rules to a parsed target.
    pub fn resolve(target: &ParsedPath) -> Address {
        match target {
            ParsedPath::Local { .. } => Address::File {
                path: target.decoded_pathname(),
            },
            ParsedPath::Regex { pattern, flags, .. } => Address::Regex {
                pattern: pattern.clone(),
                flags: flags.clone(),
            },
            ParsedPath::Url {
                scheme,
                hostname,
                fragment,
                ..
            } => {
                let path = target.decoded_pathname();
                // Opaque schemes keep what follows `://` as path; an authority scheme's host
                // is folded back in, so `known://x` and `known:///x` are one entry.
                let full = match hostname {
                    Some(h) if !h.is_empty() => format!("{h}{path}"),
                    _ => path,
                };
                match scheme.as_str() {
                    "run" => {
                        // `run://name[/path]` names a run; `run:///path` is this run's
                        // scratch (no authority: the current run).
                        // (The parser keeps `run:` opaque: `run://kid/x` arrives as the
                        // path `kid/x`, `run:///x` as `/x`.)
                        let (name, path) =
                            if let Some(h) = hostname.as_deref().filter(|h| !h.is_empty()) {
                                (h.to_owned(), Some(target.decoded_pathname()))
                            } else if full.starts_with('/') {
                                ("self".to_owned(), Some(full.clone()))
                            } else {
                                match full.split_once('/') {
                                    Some((n, p)) => (n.to_owned(), Some(format!("/{p}"))),
                                    None => (full.clone(), None),
                                }
                            };
                        let name = name.as_str();
                        let path = path.filter(|p| !p.is_empty());
                        Address::Run {
                            name: if name.is_empty() { "self" } else { name }.to_owned(),
                            path: path.filter(|p| p != "/"),
                        }
                    }
                    "log" => Address::Log {
                        pathname: normalise(&full),
                    },
                    "known" | "unknown" | "plurnk" => Address::Entry {
                        scheme: scheme.clone(),
                        pathname: normalise(&full),
                        channel: fragment.clone(),
                    },
                    rt if exec::RUNTIMES.contains(&rt) => Address::Stream {
                        runtime: rt.to_owned(),
                        path: normalise(&full),
                        channel: fragment.clone(),
                    },
                    other => Address::Unsupported {
                        scheme: other.to_owned(),
                    },
                }
            }
        }
    }

    /// The scheme name this address dispatches to (`file` for bare paths).
    pub fn scheme(&self) -> &str {
        match self {
            Address::Entry { scheme, .. } => scheme,
            Address::Log { .. } => "log",
            Address::Run { .. } => "run",
            Address::Stream { .. } => "exec",
            Address::File { .. } | Address::Regex { .. } => "file",
            Address::Unsupported { scheme } => scheme,
        }
    }

    /// The entry key of an exact entry address.
    pub fn entry_key(&self) -> Option<EntryKey> {
        match self {
            Address::Entry {
                scheme, pathname, ..
            } => Some(EntryKey {
                scope: Scope::Session,
                scheme: Some(scheme.clone()),
                hostname: None,
                pathname: pathname.clone(),
            }),
            _ => None,
        }
    }
}

/// `x` → `/x`, `//x` → `/x`; an empty path is `/`.
fn normalise(p: &str) -> String {
    let t = p.trim_start_matches('/');
    format!("/{t}")
}

/// Whether a path holds glob syntax (or names a folder with a trailing `/`).
pub fn is_pattern(pathname: &str) -> bool {
    pathname.ends_with('/')
        || pathname
            .bytes()
            .any(|b| matches!(b, b'*' | b'?' | b'[' | b'{'))
}
