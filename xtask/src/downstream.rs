//! # downstream — a layer taken alone, the way a project outside this workspace takes it
//!
//! agentos promises that a downstream project can depend on one layer (and fork it) without the
//! rest. This module checks the promise by generating, in a temp dir outside the workspace, the
//! two crates such a project would write, and running them:
//!
//! - `kernel`: depends on `agentos-abi` + `agentos-kernel` only; boots a kernel and runs a
//!   process that spawns a child and trades a message with it.
//! - `userland`: depends on `agentos-abi` + `agentos-userland` (+ `agentos-kernel` to run on);
//!   a supervisor restarts a crashed worker on the kernel.
//!
//! Both depend on the layers **by path** and with default features, as a user who vendors or
//! forks a layer would. Before building, `cargo tree` proves that nothing else of agentos and
//! none of the heavy optional dependencies ([`FORBIDDEN`]) is in their graph.
//!
//! Build cost: they share the workspace's target directory (`CARGO_TARGET_DIR` in CI, else
//! `target/`) and start from a copy of the workspace's `Cargo.lock`, so registry dependencies
//! already built by the CI's test step are reused when their features match, and the versions
//! are the ones the workspace tested. Each crate is its own workspace (its own `[workspace]`),
//! so nothing of ours is inherited: no profile, no lints, no features unified from other
//! members. The temp dir is removed afterwards.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// Packages that must not be in a downstream crate's dependency graph (normal and build
/// edges): the other layers, and what the layers keep behind features.
pub const FORBIDDEN: &[&str] = &[
    "agentos-drivers",
    "agentos-net",
    "agentos-engine",
    "agentos-wasmlimit",
    "wasmtime",
    "tantivy",
    "tokio",
    "reqwest",
];

/// One generated downstream crate.
pub struct Downstream {
    /// Package name (also the directory name under the temp dir).
    pub name: &'static str,
    /// The workspace crates it depends on (directory names under the workspace root).
    pub layers: &'static [&'static str],
    /// Its `src/main.rs`.
    pub main: &'static str,
    /// A line its output must contain.
    pub expect: &'static str,
}

/// The downstream crates the check builds and runs.
pub const CRATES: &[Downstream] = &[
    Downstream {
        name: "agentos-downstream-kernel",
        layers: &["abi", "kernel"],
        main: KERNEL_MAIN,
        expect: "downstream kernel: init exited Normal",
    },
    Downstream {
        name: "agentos-downstream-userland",
        layers: &["abi", "userland", "kernel"],
        main: USERLAND_MAIN,
        expect: "downstream userland: worker started 2 times",
    },
];

const KERNEL_MAIN: &str = r#"//! A downstream crate: agentos-abi + agentos-kernel, nothing else of agentos.
use agentos_abi::{Body, ExitReason, Image, SendOpts, SpawnOpts, Syscalls, Value};
use agentos_kernel::{BootOpts, Kernel, KernelConfig, Sys};

fn main() {
    let kernel = Kernel::new(KernelConfig::threads(2));
    let init = Image::new("init", |sys: Sys, _args: Value| async move {
        let _boot = sys.recv().await;
        let me = sys.self_cap();
        let child = Image::new("child", |sys: Sys, _args: Value| async move {
            let hello = sys.recv().await;
            let parent = hello.caps[0];
            sys.send(parent, Body::Value(Value::from("hi back")), SendOpts::default())
                .await?;
            Ok(())
        });
        let child = sys.spawn(child, SpawnOpts::default()).await?;
        let opts = SendOpts { caps: vec![me], ..SendOpts::default() };
        sys.send(child.cap, Body::Value(Value::from("hi")), opts).await?;
        let reply = sys.recv().await;
        if reply.body.as_value().and_then(Value::as_str) != Some("hi back") {
            return Err(ExitReason::fault("unexpected reply"));
        }
        sys.waitpid(child.cap).await?;
        Ok(())
    });
    let pid = kernel.boot(init, BootOpts::default()).expect("boot");
    let reason = kernel.wait_exit(pid).expect("wait");
    kernel.shutdown(ExitReason::Shutdown);
    assert_eq!(reason, ExitReason::Normal);
    println!("downstream kernel: init exited {reason:?}");
}
"#;

const USERLAND_MAIN: &str = r#"//! A downstream crate: agentos-abi + agentos-userland, run on agentos-kernel.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agentos_abi::{ExitReason, Image, Right, SpawnOpts, SysMsg, Syscalls, Value};
use agentos_kernel::{BootOpts, Kernel, KernelConfig, Sys};
use agentos_userland::{supervisor, ChildSpec, Restart, Strategy, SupervisorSpec};

fn main() {
    let starts = Arc::new(AtomicUsize::new(0));
    let counter = starts.clone();
    let worker = Image::new("worker", move |_sys: Sys, _args: Value| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err(ExitReason::fault("first start fails"))
            } else {
                Ok(())
            }
        }
    });
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(ChildSpec::new("worker", worker).restart(Restart::Transient));
    let sup_image = supervisor(spec).expect("a valid spec");

    let kernel = Kernel::new(KernelConfig::deterministic(7));
    let init = Image::new("init", move |sys: Sys, _args: Value| {
        let sup_image = sup_image.clone();
        async move {
            let boot = sys.recv().await;
            let Some(SysMsg::Boot { spawn, .. }) = boot.sys() else {
                return Err(ExitReason::fault("no boot grant"));
            };
            let spawn = sys
                .derive(*spawn, Right::Spawn.into())
                .map_err(|e| ExitReason::fault(e.to_string()))?;
            let opts = SpawnOpts { caps: vec![spawn], ..SpawnOpts::default() };
            let sup = sys.spawn(sup_image, opts).await?;
            sys.sleep(1_000).await;
            sys.term(sup.cap).await?;
            sys.waitpid(sup.cap).await?;
            Ok(())
        }
    });
    let pid = kernel.boot(init, BootOpts::default()).expect("boot");
    assert_eq!(kernel.wait_exit(pid), Ok(ExitReason::Normal));
    let n = starts.load(Ordering::SeqCst);
    assert_eq!(n, 2, "one crash, one restart");
    println!("downstream userland: worker started {n} times");
}
"#;

/// The `Cargo.toml` of a downstream crate depending on `layers` of the workspace at `root`.
pub fn manifest(name: &str, root: &Path, layers: &[&str]) -> String {
    let mut deps = String::new();
    for layer in layers {
        let path = root.join(layer);
        // TOML basic strings: escape what could break out of the quotes.
        let path = path
            .display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        deps.push_str(&format!("agentos-{layer} = {{ path = \"{path}\" }}\n"));
    }
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\n{deps}\n\
         # A workspace of its own: nothing is inherited from agentos's.\n[workspace]\n"
    )
}

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The workspace's target directory, as cargo resolves it (honours `CARGO_TARGET_DIR`).
fn target_dir(root: &Path) -> Result<PathBuf> {
    let meta = crate::tidy::cargo_metadata(root)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` gave no target_directory")
}

/// Generates, checks and runs every downstream crate; `Err` names the first that failed.
pub fn run(root: &Path) -> Result<()> {
    let target = target_dir(root)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = TempDir(
        std::env::temp_dir().join(format!("agentos-downstream-{}-{nanos}", std::process::id())),
    );
    eprintln!(
        "downstream: crates in {}, target dir {}",
        tmp.0.display(),
        target.display()
    );
    for krate in CRATES {
        let dir = tmp.0.join(krate.name);
        fs::create_dir_all(dir.join("src"))
            .with_context(|| format!("creating {}", dir.display()))?;
        fs::write(
            dir.join("Cargo.toml"),
            manifest(krate.name, root, krate.layers),
        )?;
        fs::write(dir.join("src/main.rs"), krate.main)?;
        // The versions the workspace tested (and whose artifacts the target dir holds).
        fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).context("copying Cargo.lock")?;
        check_graph(krate, &dir, &target)?;
        let out = Command::new(crate::tidy::cargo_bin())
            .args(["run", "--quiet", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .with_context(|| format!("running `cargo run` for {}", krate.name))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains(krate.expect) {
            bail!(
                "downstream crate {} failed ({}):\n{}{}",
                krate.name,
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!("downstream: {}: {}", krate.name, krate.expect);
    }
    Ok(())
}

/// `cargo tree` of the generated crate has none of [`FORBIDDEN`].
fn check_graph(krate: &Downstream, dir: &Path, target: &Path) -> Result<()> {
    let out = Command::new(crate::tidy::cargo_bin())
        .args([
            "tree",
            "--quiet",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .output()
        .with_context(|| format!("running `cargo tree` for {}", krate.name))?;
    if !out.status.success() {
        bail!(
            "`cargo tree` for {} failed ({}): {}",
            krate.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let found = forbidden_in_tree(&String::from_utf8_lossy(&out.stdout));
    if !found.is_empty() {
        bail!(
            "downstream crate {} pulls in {} by default; a layer must stand alone",
            krate.name,
            found.join(", ")
        );
    }
    Ok(())
}

/// The [`FORBIDDEN`] package names in `cargo tree --prefix none --format {p}` output.
pub fn forbidden_in_tree(tree: &str) -> Vec<&'static str> {
    FORBIDDEN
        .iter()
        .copied()
        .filter(|f| {
            tree.lines()
                .any(|l| l.split_whitespace().next() == Some(*f))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_depend_on_the_layers_by_path_only() {
        let m = manifest("x", Path::new("/ws"), &["abi", "kernel"]);
        assert!(m.contains("agentos-abi = { path = \"/ws/abi\" }"), "{m}");
        assert!(
            m.contains("agentos-kernel = { path = \"/ws/kernel\" }"),
            "{m}"
        );
        assert!(m.contains("\n[workspace]\n"), "{m}");
        assert!(!m.contains("drivers") && !m.contains("features"), "{m}");
    }

    #[test]
    fn every_crate_takes_abi_and_one_layer_under_test() {
        for c in CRATES {
            assert_eq!(c.layers[0], "abi", "{}", c.name);
            assert!(c.main.contains(c.expect.split(':').next().unwrap_or("")));
            for l in c.layers {
                assert!(
                    Path::new(&format!("{}/../{l}/Cargo.toml", env!("CARGO_MANIFEST_DIR")))
                        .is_file()
                );
            }
        }
    }

    #[test]
    fn forbidden_packages_are_found_in_tree_output() {
        let tree = "agentos-downstream-kernel v0.0.0 (/tmp/x)\nagentos-abi v0.1.0 (/ws/abi)\n\
                    serde v1.0.0\ntokio v1.40.0\ntokio-macros v2.0.0\n";
        assert_eq!(forbidden_in_tree(tree), vec!["tokio"]);
        assert!(forbidden_in_tree("agentos-abi v0.1.0 (/ws/abi)\n").is_empty());
    }
}
