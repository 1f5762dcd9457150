//! Engine scenarios, one module per PLURNK.md section they check. Each scenario is a table:
//! model emissions per turn → expected per-op statuses, turn statuses and the loop's
//! terminal status, on a deterministic kernel with a scripted model.

mod common;
mod replay;
mod s1_4_ops;
mod s2_3_exec;
mod s2_3_files;
mod s2_3_runs;
mod s2_schemes;
mod s3_2_rails;
mod s3_3_turn;
mod s3_5_budget;
mod s3_9_runs;
mod s4_2_client_ops;
mod s5_store;
