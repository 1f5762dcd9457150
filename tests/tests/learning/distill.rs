//! Distillation: lessons parsed from good and hostile model output, the distiller's request,
//! and `learn` storing (deduplicated, tagged) lessons.

use crate::common::*;
use agentos_abi::*;
use agentos_userland::distill::*;
use agentos_userland::llm::ChatError;
use agentos_userland::longmem::*;
use proptest::prelude::*;

#[test]
fn well_formed_lessons_are_parsed_and_stripped_of_list_markers() {
    let reply = "- Run the failing test alone before changing code\n\
                 2. Check the lockfile when a dependency resolves oddly\n\
                 \u{2022} Quote shell variables that may hold spaces\n\
                 * A fourth lesson that is over the limit of three";
    assert_eq!(
        parse_lessons(reply),
        [
            "Run the failing test alone before changing code",
            "Check the lockfile when a dependency resolves oddly",
            "Quote shell variables that may hold spaces",
        ]
    );
    // CRLF, numbering with parentheses, extra inner spaces, a blank line.
    assert_eq!(
        parse_lessons("1) Prefer   rg over grep\r\n\r\n10. Read the whole error\r\n"),
        ["Prefer rg over grep", "Read the whole error"]
    );
}

#[test]
fn junk_output_yields_no_lessons_or_only_the_usable_lines() {
    for junk in [
        "",
        "   \n\t\n",
        "```\n```",
        "1.\n2.\n3.\n- \n* *",
        "ok\nyes\nnone",
        "Here are the lessons:\nLessons learned from this session:",
        "\u{0}\u{1}\u{7}\u{1b}[31m\u{7f}",
        "12345678",
        "--------------------------------",
    ] {
        assert!(parse_lessons(junk).is_empty(), "{junk:?}");
    }
    // A wall of prose is not a lesson; the line after it is.
    let wall = format!(
        "{}\nCache the build directory between runs",
        "recap ".repeat(1_000)
    );
    assert_eq!(
        parse_lessons(&wall),
        ["Cache the build directory between runs"]
    );
    // Repeats (after normalization) count once, so they do not crowd out the rest.
    assert_eq!(
        parse_lessons("Check the logs first\n- check the LOGS   first\nRetry with backoff on 429"),
        ["Check the logs first", "Retry with backoff on 429"]
    );
    // Control characters are blanked, not kept.
    assert_eq!(
        parse_lessons("Use\u{0}set -e\u{1b}in scripts"),
        ["Use set -e in scripts"]
    );
    // Leading digits are list markers (as in the seed); the rest of the line stays.
    assert_eq!(
        parse_lessons("3 retries are enough"),
        ["retries are enough"]
    );
}

/// The list markers a lesson never starts with.
const MARKERS: [char; 6] = ['-', '*', '\u{2022}', '.', ')', '+'];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the model says: no panic, at most three lessons, each a trimmed single line of
    /// bounded length without a leading list marker or control characters, all distinct.
    #[test]
    fn any_output_parses_into_bounded_clean_lessons(text in any::<String>(), lines in proptest::collection::vec("[-*0-9. \t]{0,4}[ -~]{0,300}", 0..8)) {
        for input in [text, lines.join("\n"), lines.join("\r\n")] {
            let out = parse_lessons(&input);
            prop_assert!(out.len() <= MAX_LESSONS);
            let mut keys = Vec::new();
            for l in &out {
                let n = l.chars().count();
                prop_assert!(n > MIN_LESSON_CHARS && n <= MAX_LESSON_CHARS, "{l:?}");
                prop_assert_eq!(l.trim(), l.as_str());
                prop_assert!(!l.contains('\n') && !l.chars().any(char::is_control));
                prop_assert!(!l.ends_with(':'));
                let first = l.chars().next().unwrap_or(' ');
                prop_assert!(!MARKERS.contains(&first) && !first.is_ascii_digit(), "{:?}", l);
                let k = normalize(l);
                prop_assert!(!keys.contains(&k));
                keys.push(k);
            }
        }
    }
}

fn session() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are a build doctor."),
        ChatMessage::user("The CI build fails on a fresh machine."),
        ChatMessage::assistant("The lockfile pins an old rustc; I updated rust-toolchain.toml."),
        ChatMessage::user("Thanks, it passes now."),
    ]
}

#[tokio::test]
async fn the_llm_distiller_asks_with_the_seed_prompt_and_parses_the_reply() {
    let (chat, seen) = host_chat(|_| {
        Ok("Here you go:\n- Pin the toolchain in rust-toolchain.toml\n- Try the build on a clean checkout\n".into())
    });
    let d = llm_distiller(chat);
    let lessons = d.distill(&session()).await.unwrap();
    assert_eq!(
        lessons,
        [
            "Pin the toolchain in rust-toolchain.toml",
            "Try the build on a clean checkout"
        ],
        "a heading line (ending in a colon) is not a lesson"
    );
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].messages.len(), 2);
    assert_eq!(reqs[0].messages[0], ChatMessage::system(DISTILL_SYSTEM));
    assert_eq!(
        reqs[0].messages[1],
        ChatMessage::user(
            "user: The CI build fails on a fresh machine.\n\
             assistant: The lockfile pins an old rustc; I updated rust-toolchain.toml.\n\
             user: Thanks, it passes now."
        ),
        "the transcript leaves the system prompt out"
    );
    assert_eq!(reqs[0].max_tokens, Some(DEFAULT_DISTILL_MAX_TOKENS));
    assert!(reqs[0].tools.is_empty());

    // A session with nothing but a system prompt costs no call.
    let only_system = vec![ChatMessage::system("x")];
    assert!(d.distill(&only_system).await.unwrap().is_empty());
    assert!(d.distill(&[]).await.unwrap().is_empty());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn learn_stores_new_lessons_with_tags_and_counts_only_new_ones() {
    let (chat, _) = host_chat(|_| {
        Ok(
            "- Pin the toolchain in rust-toolchain.toml\n- Try the build on a clean checkout"
                .into(),
        )
    });
    let d = llm_distiller(chat);
    let mut mem = LongMemory::new().with_clock(fixed_clock(42));
    assert_eq!(
        learn(&mut mem, &d, &session(), &["ci", "Rust"])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        learn(&mut mem, &d, &session(), &["ci"]).await.unwrap(),
        0,
        "the same lessons again are not new"
    );
    let all: Vec<_> = mem.all().cloned().collect();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].text, "Pin the toolchain in rust-toolchain.toml");
    assert_eq!(all[0].tags, ["ci", "rust"]);
    assert_eq!(all[1].ts, 42);

    // A closure is a distiller too; its lessons are deduplicated against memory.
    let fixed = |_: &[ChatMessage]| {
        vec![
            "pin the TOOLCHAIN in rust-toolchain.toml".to_owned(),
            "Keep CI caches keyed by the lockfile".to_owned(),
        ]
    };
    assert_eq!(
        learn(&mut mem, &fixed, &session(), &[] as &[&str])
            .await
            .unwrap(),
        1
    );
    assert_eq!(mem.len(), 3);
}

#[tokio::test]
async fn a_distiller_failure_is_reported_and_stores_nothing() {
    let (chat, _) = host_chat(|_| Err(ChatError::Other("provider down".into())));
    let mut mem = LongMemory::new();
    let err = learn(&mut mem, &llm_distiller(chat), &session(), &["x"])
        .await
        .unwrap_err();
    assert!(matches!(err, LearnError::Distill(ChatError::Other(ref m)) if m == "provider down"));
    assert!(mem.is_empty());

    // A model that answers junk teaches nothing.
    let (chat, _) = host_chat(|_| Ok("```\n\n```\n\u{0}\u{0}".into()));
    assert_eq!(
        learn(&mut mem, &llm_distiller(chat), &session(), &["x"])
            .await
            .unwrap(),
        0
    );
    assert!(mem.is_empty());
}
