//! TEMPORARY stand-in for the `parse` workload (written by xtask's helper only so the bench
//! runner compiles; the parse helper replaces this file). It never fakes a result.

/// Runs the `parse` workload: not built yet, so it fails.
pub fn run(_quick: bool) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("parse workload not built")
}
