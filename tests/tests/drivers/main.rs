//! Driver scenarios: the standard devices behind a real kernel — processes open them through
//! device capabilities and are charged for what they use. LLM providers talk to an in-test
//! HTTP server on 127.0.0.1 that speaks the providers' wire formats; nothing leaves the host.
//! The `fs` and `exec` devices work in temp directories (a real git repository, real
//! subprocesses under bubblewrap).

mod common;
mod exec;
mod fs;
mod gateway;
mod kv;
mod llm;
mod local_model;
mod secure_gateway;
mod server;
mod tools;
#[path = "../kernel/util.rs"]
mod util;
mod wasm;
mod worker;
