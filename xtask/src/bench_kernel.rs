//! Kernel workloads of BENCHMARKS.md (placeholder: none registered yet; the lead replaces
//! this file with the real spawn/pingpong/... workloads).

/// The registered kernel workloads as (BENCHMARKS.md key, runner taking `quick`).
pub fn workloads() -> Vec<(&'static str, fn(bool) -> anyhow::Result<serde_json::Value>)> {
    Vec::new()
}
