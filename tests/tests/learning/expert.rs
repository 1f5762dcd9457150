//! The prompt expert end to end inside a process: it learns lessons from a session, forges a
//! persona from them and hires it for a task, every model call a read of the scripted LLM
//! device charged to the process; memory and personas persist in files; a hostile (empty)
//! forge saves nothing; a token quota that runs out ends the process but keeps what was learned.

use crate::common::*;
use agentos_abi::*;
use agentos_drivers::llm::ScriptedProvider;
use agentos_kernel::Sys;
use agentos_userland::distill::DISTILL_SYSTEM;
use agentos_userland::expert::*;
use agentos_userland::llm::LlmDevice;
use agentos_userland::longmem::*;
use agentos_userland::persona::*;
use agentos_userland::promptsmith::SMITH_SYSTEM;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const LESSONS: &str = "Lessons:\n\
    - Check the linker flags in .cargo/config.toml\n\
    - Install the -dev package for a missing C library\n";

fn session() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are a build doctor."),
        ChatMessage::user("cargo build fails: linker `cc` not found, then -lssl missing"),
        ChatMessage::assistant("Installed build-essential and libssl-dev; the build passes."),
    ]
}

/// A model that distills [`LESSONS`] and forges a prompt that says how many lessons its brief
/// carried (in a code fence, which the smith unwraps). Each reply costs [`REPLY_TOKENS`].
fn model() -> Arc<ScriptedProvider> {
    Arc::new(ScriptedProvider::with(|req| {
        let system = system_of(req);
        Ok(if system == DISTILL_SYSTEM {
            text(LESSONS)
        } else if system == SMITH_SYSTEM {
            let lessons = user_of(req).matches("\n- ").count();
            text(&format!(
                "```\nYou are a Rust build doctor. Ground, act, verify. ({lessons} lessons)\n```"
            ))
        } else {
            text("?")
        })
    }))
}

fn cargo_tool() -> ToolSpec {
    ToolSpec {
        name: "cargo".into(),
        description: "run cargo".into(),
        ..ToolSpec::default()
    }
}

/// Open an expert over the stores in `dir`, on the process's clock.
fn expert(sys: &Sys, llm: LlmDevice<Sys>, dir: &Path) -> PromptExpert<LlmDevice<Sys>> {
    let memory = LongMemory::open(FileStore::open(dir.join("lessons.jsonl")).unwrap())
        .unwrap()
        .with_clock(sys_clock(sys));
    let personas = PersonaRegistry::open(PersonaFile::open(dir.join("personas.jsonl")).unwrap())
        .unwrap()
        .with_clock(sys_clock(sys));
    PromptExpert::new(llm, memory, personas)
}

#[derive(Debug)]
struct Saw {
    learned: Vec<usize>,
    persona: Persona,
    hired: Option<Instance>,
    missing: bool,
}

#[test]
fn the_expert_learns_specializes_and_hires_through_the_llm_device() {
    let p = model();
    let k = kernel(&p);
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_owned();
    let ran = in_process(&k, Quota::default(), move |sys, llm| {
        let root = root.clone();
        async move {
            let mut ex = expert(&sys, llm, &root);
            let mut learned = vec![ex.learn(&session(), &["rust"]).await.unwrap()];
            learned.push(ex.learn(&session(), &["rust"]).await.unwrap());
            let persona = ex
                .specialize(
                    "rust",
                    SpecializeOpts {
                        goal: Some("fix builds".into()),
                        tools: vec![cargo_tool()],
                        name: None,
                    },
                )
                .await
                .unwrap();
            let hired = ex.hire("rust", "fix the linker error", 4);
            let missing = ex.hire("nobody", "anything", 4).is_none();
            Saw {
                learned,
                persona,
                hired,
                missing,
            }
        }
    });
    assert_eq!(ran.exit, ExitReason::Normal);
    let saw = ran.out.unwrap();
    assert_eq!(saw.learned, [2, 0], "the second session taught nothing new");
    assert_eq!(saw.persona.name, "rust");
    assert_eq!(saw.persona.domain, "rust");
    assert_eq!(
        saw.persona.system,
        "You are a Rust build doctor. Ground, act, verify. (2 lessons)"
    );
    assert_eq!(saw.persona.tools, [cargo_tool()]);
    assert!(saw.persona.ts.is_some());
    assert!(saw.missing);

    let hired = saw.hired.unwrap();
    assert_eq!(hired.task, "fix the linker error");
    assert_eq!(hired.tools, [cargo_tool()]);
    assert_eq!(
        hired.system,
        "You are a Rust build doctor. Ground, act, verify. (2 lessons)\n\n\
         Lessons from past work (apply when relevant):\n\
         - Check the linker flags in .cargo/config.toml\n\
         - Install the -dev package for a missing C library"
    );

    // Three model calls (two distillations, one forge), all charged to the process.
    let reqs = p.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(ran.usage.tokens, 3 * REPLY_TOKENS);
    assert_eq!(ran.usage.usd_micros, 3 * (10 + 2 * 5));
    assert_eq!(system_of(&reqs[0]), DISTILL_SYSTEM);
    assert!(user_of(&reqs[0]).starts_with("user: cargo build fails"));
    assert_eq!(system_of(&reqs[2]), SMITH_SYSTEM);
    assert_eq!(
        user_of(&reqs[2]),
        "Domain: rust\nGoal: fix builds\nAvailable tools: cargo\nLessons to bake in:\n\
         - Check the linker flags in .cargo/config.toml\n\
         - Install the -dev package for a missing C library"
    );

    // Everything persisted: lessons (with the forge's and the hire's recalls counted) and the
    // persona.
    let mem = LongMemory::open(FileStore::open(dir.path().join("lessons.jsonl")).unwrap()).unwrap();
    assert_eq!(
        mem.all()
            .map(|l| (l.text.as_str(), l.tags.clone(), l.uses))
            .collect::<Vec<_>>(),
        [
            (
                "Check the linker flags in .cargo/config.toml",
                vec!["rust".to_owned()],
                2
            ),
            (
                "Install the -dev package for a missing C library",
                vec!["rust".to_owned()],
                2
            ),
        ]
    );
    let reg = PersonaRegistry::open(PersonaFile::open(dir.path().join("personas.jsonl")).unwrap())
        .unwrap();
    assert_eq!(reg.get("rust"), Some(&saw.persona));
}

#[test]
fn an_empty_forge_saves_no_persona_and_a_spent_quota_ends_the_process() {
    // A model that answers the forge with whitespace only.
    let p = Arc::new(ScriptedProvider::with(|req| {
        Ok(if system_of(req) == DISTILL_SYSTEM {
            text(LESSONS)
        } else {
            text(" \n ")
        })
    }));
    let k = kernel(&p);
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_owned();
    let ran = in_process(&k, Quota::default(), move |sys, llm| {
        let root = root.clone();
        async move {
            let mut ex = expert(&sys, llm, &root);
            let err = ex
                .specialize("rust", SpecializeOpts::default())
                .await
                .unwrap_err();
            (
                err.to_string(),
                ex.personas().len(),
                ex.hire("rust", "x", 4).is_none(),
            )
        }
    });
    assert_eq!(ran.exit, ExitReason::Normal);
    let (err, personas, no_hire) = ran.out.unwrap();
    assert!(err.contains("empty prompt"), "{err}");
    assert_eq!(personas, 0);
    assert!(no_hire);

    // A token quota for one call: the distillation goes through and its lessons are stored;
    // the forge's charge overruns the quota and the kernel ends the process.
    let k = kernel(&model());
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index");
    let idx = index.clone();
    let ran = in_process(
        &k,
        Quota {
            tokens: Some(REPLY_TOKENS + 5),
            ..Quota::default()
        },
        move |sys, llm| {
            let idx = idx.clone();
            async move {
                let memory = LongMemory::open(TantivyStore::open(&idx).unwrap())
                    .unwrap()
                    .with_clock(sys_clock(&sys));
                let mut ex = PromptExpert::new(llm, memory, PersonaRegistry::new());
                let learned = ex.learn(&session(), &["rust"]).await.unwrap();
                let forged = ex.specialize("rust", SpecializeOpts::default()).await;
                (learned, forged.map(|p| p.name).map_err(|e| e.to_string()))
            }
        },
    );
    assert_eq!(
        ran.exit,
        ExitReason::Quota {
            resource: Meter::Tokens
        }
    );
    assert!(ran.out.is_none(), "the process never saw the forge's reply");
    let mem = LongMemory::open(TantivyStore::open(&index).unwrap()).unwrap();
    assert_eq!(
        mem.len(),
        2,
        "what was learned before the quota ran out is kept"
    );
}
