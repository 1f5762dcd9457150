//! Personas: a registry persisted across reopen, replacement by name, domains, and
//! `instantiate` enriching a persona's prompt with recalled lessons.

use agentos_abi::*;
use agentos_userland::longmem::*;
use agentos_userland::persona::*;

fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("the {name} tool"),
        ..ToolSpec::default()
    }
}

#[test]
fn the_registry_persists_across_reopen_and_replaces_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("personas.jsonl");
    {
        let mut reg = PersonaRegistry::open(PersonaFile::open(&path).unwrap())
            .unwrap()
            .with_clock(fixed_clock(100));
        assert!(reg.is_empty());
        let saved = reg
            .save(
                Persona::new("rustacean", "rust", "You fix Rust builds.")
                    .with_tools(vec![tool("cargo")]),
            )
            .unwrap();
        assert_eq!(saved.ts, Some(100), "stamped by the registry's clock");
        reg.save(Persona {
            ts: Some(7),
            ..Persona::new("dba", "sql", "You tune queries.")
        })
        .unwrap();
        reg.save(Persona::new("pg", "sql", "You run Postgres."))
            .unwrap();
        // Saving a name again replaces it.
        reg.save(Persona::new("dba", "sql", "You tune queries, carefully."))
            .unwrap();
        assert_eq!(reg.len(), 3);
    }
    let reg = PersonaRegistry::open(PersonaFile::open(&path).unwrap()).unwrap();
    assert_eq!(
        reg.list().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["dba", "pg", "rustacean"]
    );
    let dba = reg.get("dba").unwrap();
    assert_eq!(dba.system, "You tune queries, carefully.");
    assert_eq!(dba.ts, Some(100));
    let rust = reg.get("rustacean").unwrap();
    assert_eq!(rust.tools, [tool("cargo")], "tools survive the round trip");
    assert_eq!(
        reg.for_domain("sql")
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["dba", "pg"]
    );
    assert_eq!(reg.for_domain("go").count(), 0);
    assert!(reg.get("nobody").is_none());
}

#[test]
fn a_failed_save_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("personas.jsonl");
    let mut reg = PersonaRegistry::open(PersonaFile::open(&path).unwrap()).unwrap();
    // Its directory becomes a file, so writes fail (even as root).
    std::fs::write(dir.path().join("sub"), "not a directory").unwrap();
    assert!(reg.save(Persona::new("a", "d", "s")).is_err());
    assert!(reg.get("a").is_none());
}

#[test]
fn instantiate_appends_recalled_lessons_and_carries_the_tools() {
    let p = Persona::new("rustacean", "rust", "You fix Rust builds.")
        .with_tools(vec![tool("cargo"), tool("shell")]);

    // Without memory: the persona's own prompt.
    let bare = instantiate(&p, "fix the linker error", None, DEFAULT_RECALL);
    assert_eq!(bare.system, "You fix Rust builds.");
    assert_eq!(bare.task, "fix the linker error");
    assert_eq!(bare.persona, "rustacean");
    assert_eq!(bare.tools, p.tools);
    assert!(bare.lessons.is_empty());

    let mut mem = LongMemory::new();
    mem.remember("Check the linker flags in .cargo/config.toml", &["rust"])
        .unwrap();
    mem.remember(
        "Install the -dev package for a missing C library",
        &["linux"],
    )
    .unwrap();
    mem.remember("Water the plants on Fridays", &["home"])
        .unwrap();
    let inst = instantiate(&p, "fix the linker error", Some(&mut mem), 4);
    // The query is "rust fix the linker error": lesson 1 scores "rust" (its tag), "the" and
    // "linker"; lessons 2 and 3 only "the" (substring matching, as the seed).
    assert_eq!(
        inst.lessons.iter().map(|l| l.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(inst.system.starts_with(
        "You fix Rust builds.\n\nLessons from past work (apply when relevant):\n- Check the linker flags in .cargo/config.toml"
    ));
    assert_eq!(inst.lessons.len(), inst.system.matches("\n- ").count());
    assert_eq!(mem.get(1).unwrap().uses, 1, "recalling counts a use");

    // k bounds the lessons.
    let one = instantiate(&p, "linker", Some(&mut mem), 1);
    assert_eq!(one.lessons.len(), 1);
    let none = instantiate(&p, "anything", Some(&mut mem), 0);
    assert_eq!(none.system, p.system);

    // As image arguments.
    assert_eq!(Instance::from_value(inst.to_value()), Ok(inst.clone()));
    let v = inst.to_value();
    assert_eq!(
        v.get("task").and_then(Value::as_str),
        Some("fix the linker error")
    );
    assert_eq!(
        v.get("system").and_then(Value::as_str),
        Some(inst.system.as_str())
    );
}
