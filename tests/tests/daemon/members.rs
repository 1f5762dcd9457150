//! PLURNK.md §4.2 `session.members` (§2.3 membership): the attached session's project files
//! after its overlay — the repo's tracked and untracked-not-ignored files, plus `pick`, minus
//! `hide`, `view` read-only — as the `fs` device computes them; a headless session has none.

use serde_json::{json, Value};

use crate::common::{block_on, code, connect, one_turn_model, start};

/// `(path, effect, access)` of every member, in the order listed.
fn members(v: &Value) -> Vec<(String, String, String)> {
    v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().expect(k).to_owned();
            (s("path"), s("effect"), s("access"))
        })
        .collect()
}

fn m(path: &str, effect: &str, access: &str) -> (String, String, String) {
    (path.into(), effect.into(), access.into())
}

#[test]
fn members_follow_the_overlay_pick_hide_and_view() {
    let project = agentos_tests::git_project(&[
        (".gitignore", b"build/\n"),
        ("README.md", b"# p\n"),
        ("secret.env", b"KEY=1\n"),
        ("src/a.rs", b"fn a() {}\n"),
    ]);
    let root = project.path();
    // Ignored (not a member unless picked) and untracked-not-ignored (a member).
    std::fs::create_dir_all(root.join("build")).expect("mkdir");
    std::fs::write(root.join("build/out.txt"), "artifact\n").expect("write");
    std::fs::write(root.join("notes.txt"), "todo\n").expect("write");
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        assert_eq!(code(c.call("session.members", json!({})).await), -32000);
        c.call(
            "session.create",
            json!({ "projectRoot": root.to_str().expect("utf-8 path") }),
        )
        .await
        .expect("create");
        let before = c.call("session.members", json!({})).await.expect("members");
        assert_eq!(
            members(&before),
            [
                m(".gitignore", "repo", "rw"),
                m("README.md", "repo", "rw"),
                m("notes.txt", "repo", "rw"),
                m("secret.env", "repo", "rw"),
                m("src/a.rs", "repo", "rw"),
            ]
        );
        assert_eq!(before["hidden"], json!([]));
        assert_eq!(before["members"][1]["size"], 4);
        assert_eq!(before["members"][1]["binary"], false);
        for (effect, glob) in [
            ("pick", "build/out.txt"),
            ("hide", "secret.env"),
            ("view", "README.md"),
        ] {
            c.call(
                "session.constrain",
                json!({ "effect": effect, "glob": glob }),
            )
            .await
            .expect("constrain");
        }
        let after = c.call("session.members", json!({})).await.expect("members");
        assert_eq!(
            members(&after),
            [
                m(".gitignore", "repo", "rw"),
                m("README.md", "view", "ro"),
                m("build/out.txt", "pick", "rw"),
                m("notes.txt", "repo", "rw"),
                m("src/a.rs", "repo", "rw"),
            ]
        );
        assert_eq!(after["hidden"], json!(["secret.env"]));
        // Removing the hide brings the file back.
        c.call(
            "session.unconstrain",
            json!({ "effect": "hide", "glob": "secret.env" }),
        )
        .await
        .expect("unconstrain");
        let back = c.call("session.members", json!({})).await.expect("members");
        assert!(members(&back).contains(&m("secret.env", "repo", "rw")));
        assert_eq!(back["hidden"], json!([]));
    });
}

#[test]
fn a_headless_session_has_no_members() {
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({})).await.expect("create");
        let r = c.call("session.members", json!({})).await.expect("members");
        assert_eq!(r, json!({ "members": [], "hidden": [] }));
    });
}

#[test]
fn a_session_whose_root_is_gone_answers_an_error() {
    let project = agentos_tests::git_project(&[("a.txt", b"a\n")]);
    let root = project.path().to_str().expect("utf-8 path").to_owned();
    let d = start(one_turn_model());
    block_on(async {
        let c = connect(&d.url).await;
        c.call("session.create", json!({ "projectRoot": root }))
            .await
            .expect("create");
        drop(project);
        assert_eq!(code(c.call("session.members", json!({})).await), -32603);
    });
}
