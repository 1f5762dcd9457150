//! Bare paths: how a relative path from a request becomes a file inside a root, or a refusal.
//!
//! The rule is two-step. First, lexically ([`normalize_rel`]): the path must be relative, free
//! of NUL bytes, and its `..` components must never climb above the root (`a/../b` is `b`;
//! `../x` is an escape). Second, on disk ([`contain`]): the longest existing prefix of the path
//! is canonicalized (symlinks resolved) and must still lie under the canonical root, so a
//! symlink inside the project that points outside it is an escape too. Shared by the `fs`
//! device (every file operation) and the `exec` device (a process's working directory).

use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a path was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PathError {
    /// The path is absolute; only paths relative to the root are accepted.
    #[error("absolute paths are refused; use a path relative to the project root")]
    Absolute,
    /// The path names the root itself where a file was expected.
    #[error("the path is empty")]
    Empty,
    /// The path contains a NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
    /// The path (lexically, or through a symlink) leaves the root.
    #[error("the path leaves the project root")]
    Escape,
    /// The path is inside a `.git` directory, which the devices never touch.
    #[error("paths inside .git are never reachable")]
    Protected,
    /// The disk could not be examined.
    #[error("cannot resolve the path: {0}")]
    Io(String),
}

/// The lexical normal form of a relative path: components joined by `/`, with `.` and empty
/// components dropped and `..` taking one component back. `""` is the root itself. A `..`
/// above the root, an absolute path or a NUL byte is refused; so is any `.git` component.
pub fn normalize_rel(p: &str) -> Result<String, PathError> {
    if p.contains('\0') {
        return Err(PathError::Nul);
    }
    if p.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Escape);
                }
            }
            c => parts.push(c),
        }
    }
    if parts.contains(&".git") {
        return Err(PathError::Protected);
    }
    Ok(parts.join("/"))
}

/// Where a normalized relative path lands on disk, refusing any symlink that leads out of
/// `root` (which must already be canonical). The longest existing prefix is canonicalized and
/// checked; the components after it do not exist yet (a file or directories to create) and
/// are appended as they are. An existing symlink is followed: the answer is its target, which
/// must lie inside the root (a dangling symlink is refused as an escape, since where it would
/// land cannot be checked).
pub fn contain(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let mut existing = root.to_path_buf();
    let mut rest: Vec<&str> = Vec::new();
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in comps.iter().enumerate() {
        let next = existing.join(c);
        match std::fs::symlink_metadata(&next) {
            Ok(_) => existing = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                rest.extend_from_slice(&comps[i..]);
                break;
            }
            Err(e) => return Err(PathError::Io(e.to_string())),
        }
    }
    let canon = match existing.canonicalize() {
        Ok(c) => c,
        // A dangling symlink: where it points cannot be checked, so it is not followed.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(PathError::Escape),
        Err(e) => return Err(PathError::Io(e.to_string())),
    };
    if !canon.starts_with(root) {
        return Err(PathError::Escape);
    }
    if canon
        .strip_prefix(root)
        .map(|p| p.components().any(|c| c.as_os_str() == ".git"))
        .unwrap_or(false)
    {
        return Err(PathError::Protected);
    }
    let mut out = canon;
    for c in rest {
        out.push(c);
    }
    Ok(out)
}

/// The canonical form of a scope's root: an absolute path to an existing directory.
pub fn canonical_root(root: &str) -> Result<PathBuf, String> {
    if !root.starts_with('/') {
        return Err(format!("the root {root:?} is not an absolute path"));
    }
    let canon = Path::new(root)
        .canonicalize()
        .map_err(|e| format!("the root {root:?} cannot be resolved: {e}"))?;
    if !canon.is_dir() {
        return Err(format!("the root {root:?} is not a directory"));
    }
    Ok(canon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_paths_stay_inside_the_root() {
        assert_eq!(normalize_rel("a/./b//c"), Ok("a/b/c".into()));
        assert_eq!(normalize_rel("a/../b"), Ok("b".into()));
        assert_eq!(normalize_rel(""), Ok(String::new()));
        assert_eq!(normalize_rel("."), Ok(String::new()));
        assert_eq!(normalize_rel("../x"), Err(PathError::Escape));
        assert_eq!(normalize_rel("a/../../x"), Err(PathError::Escape));
        assert_eq!(normalize_rel("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(normalize_rel("a\0b"), Err(PathError::Nul));
        assert_eq!(normalize_rel(".git/config"), Err(PathError::Protected));
        assert_eq!(normalize_rel("sub/.git/hooks/x"), Err(PathError::Protected));
        assert_eq!(normalize_rel(".gitignore"), Ok(".gitignore".into()));
    }

    #[test]
    fn symlinks_out_of_the_root_are_escapes() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("in"), "i").unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("outdir")).unwrap();
        std::os::unix::fs::symlink(root.join("in"), root.join("alias")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", root.join("dangling")).unwrap();
        assert_eq!(contain(&root, "in"), Ok(root.join("in")));
        assert_eq!(contain(&root, "alias"), Ok(root.join("in")));
        assert_eq!(contain(&root, "d/new/file"), Ok(root.join("d/new/file")));
        assert_eq!(contain(&root, "out"), Err(PathError::Escape));
        assert_eq!(contain(&root, "outdir/secret"), Err(PathError::Escape));
        assert_eq!(contain(&root, "outdir/new"), Err(PathError::Escape));
        assert_eq!(contain(&root, "dangling"), Err(PathError::Escape));
        assert_eq!(contain(&root, ""), Ok(root.clone()));
    }
}
