//! Evolution: tournaments rank by fitness, the incumbent stays unless a challenger beats it by
//! the margin, generations of mutations improve a scripted fitness, refinements go through the
//! prompt smith, and metered fitness makes the cheaper of two equally correct prompts win.

use crate::common::*;
use agentos_abi::*;
use agentos_userland::evolve::*;
use agentos_userland::llm::{Chat, ChatError};
use agentos_userland::promptsmith::*;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

/// A scripted fitness: one point per distinct "virtue" word the prompt mentions, minus a
/// hundredth of a point per word (so shorter is better among equals).
fn virtue(prompt: &str) -> f64 {
    let lower = prompt.to_lowercase();
    let points = ["verify", "ground", "concise", "tests", "cite"]
        .iter()
        .filter(|w| lower.contains(*w))
        .count() as f64;
    points - prompt.split_whitespace().count() as f64 / 100.0
}

fn score_virtue(p: &str) -> std::future::Ready<Result<f64, Infallible>> {
    std::future::ready(Ok(virtue(p)))
}

#[tokio::test]
async fn a_tournament_ranks_by_fitness_keeping_ties_in_order() {
    let ranked = tournament(
        vec![
            Candidate::new("a", "be nice"),
            Candidate::new("b", "verify then answer"),
            Candidate::new("c", "nan"),
            Candidate::new("d", "be kind"),
        ],
        |p: &str| {
            let f = if p == "nan" { f64::NAN } else { virtue(p) };
            std::future::ready(Ok::<_, Infallible>(f))
        },
    )
    .await
    .unwrap();
    let labels: Vec<&str> = ranked.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        ["b", "a", "d", "c"],
        "ties keep their order; NaN last"
    );
    assert_eq!(ranked[0].index, 1);
    assert_eq!(ranked[0].prompt, "verify then answer");

    // The first scoring error stops the tournament.
    let mut calls = 0;
    let r = tournament(
        vec![
            Candidate::new("a", "x"),
            Candidate::new("b", "y"),
            Candidate::new("c", "z"),
        ],
        |p: &str| {
            calls += 1;
            std::future::ready(if p == "y" {
                Err("scorer down")
            } else {
                Ok(1.0)
            })
        },
    )
    .await;
    assert_eq!(r, Err("scorer down"));
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn the_fitter_prompt_wins_and_the_incumbent_stays_within_the_margin() {
    let base = "answer the question";
    let better = "ground the answer then verify it"; // 2 points
    let slightly = "answer concisely"; // 1 point, fewer words
    let s = select(
        base,
        vec![slightly.into(), better.into()],
        score_virtue,
        0.5,
    )
    .await
    .unwrap();
    assert!(s.improved);
    assert_eq!(s.winner, better);
    assert_eq!(s.ranked[0].label, "v2");
    assert_eq!(
        s.ranked.iter().find(|r| r.label == BASELINE).unwrap().index,
        0
    );
    assert!((s.winner_fitness - virtue(better)).abs() < 1e-12);

    // A challenger ahead by less than the margin does not replace the incumbent.
    let s = select(base, vec![slightly.into()], score_virtue, 1.5)
        .await
        .unwrap();
    assert!(!s.improved);
    assert_eq!(s.winner, base);
    assert_eq!(s.ranked[0].label, "v1", "it still ranks first");
    assert_eq!(s.winner_fitness, s.baseline_fitness);

    // Nor does a tie, even with no margin; nor a worse one.
    let s = select(
        base,
        vec!["answer the question".into(), "ramble on and on".into()],
        score_virtue,
        0.0,
    )
    .await
    .unwrap();
    assert!(!s.improved);
    assert_eq!(s.winner, base);

    // No variants: the incumbent.
    let s = select(base, vec![], score_virtue, 0.0).await.unwrap();
    assert_eq!(
        (s.winner.as_str(), s.improved, s.ranked.len()),
        (base, false, 1)
    );
}

/// A deterministic mutator: variant i of generation g appends the (g * variants + i)-th word
/// of a fixed list, so some mutations help and some do not.
fn append_word(m: Mutation) -> std::future::Ready<Result<String, Infallible>> {
    const WORDS: [&str; 8] = [
        "please", "verify", "kindly", "ground", "tests", "really", "cite", "concise",
    ];
    let i = (m.generation * m.variants + m.variant) as usize % WORDS.len();
    std::future::ready(Ok(format!("{} {}", m.incumbent, WORDS[i])))
}

#[tokio::test]
async fn evolution_improves_over_generations_and_is_deterministic() {
    let opts = EvolveOpts {
        generations: 4,
        variants: 2,
        margin: 0.0,
    };
    let scored_prompts = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = scored_prompts.clone();
    let run = |log: Arc<Mutex<Vec<String>>>| {
        evolve("Answer the task.", &opts, append_word, move |p: &str| {
            log.lock().unwrap().push(p.to_owned());
            score_virtue(p)
        })
    };
    let e = run(log).await.unwrap();
    assert!(e.improved);
    assert_eq!(e.generations.len(), 4);
    // Each generation keeps the fitter of "please"/"verify", "kindly"/"ground", ...
    assert_eq!(e.best, "Answer the task. verify ground tests cite");
    assert!((e.fitness - virtue(&e.best)).abs() < 1e-12);
    assert!(e.fitness > e.base_fitness + 3.9);
    let fits: Vec<f64> = e
        .generations
        .iter()
        .map(|g| g.selection.winner_fitness)
        .collect();
    assert!(
        fits.windows(2).all(|w| w[1] > w[0]),
        "strictly improving: {fits:?}"
    );
    // The incumbent is scored once, not once per generation: 1 + 2 per generation.
    assert_eq!(e.scored, 1 + 2 * 4);
    assert_eq!(scored_prompts.lock().unwrap().len(), e.scored);

    // The same inputs give the same evolution.
    let again = run(Arc::new(Mutex::new(Vec::new()))).await.unwrap();
    assert_eq!(again, e);
}

#[tokio::test]
async fn a_margin_keeps_the_incumbent_and_blank_or_repeated_variants_are_skipped() {
    // With a margin above any single step's gain, nothing replaces the base.
    let e = evolve(
        "Answer the task.",
        &EvolveOpts {
            generations: 3,
            variants: 2,
            margin: 1.5,
        },
        append_word,
        score_virtue,
    )
    .await
    .unwrap();
    assert!(!e.improved);
    assert_eq!(e.best, "Answer the task.");
    assert_eq!(e.fitness, e.base_fitness);

    // A mutator that answers blanks and the incumbent itself proposes nothing to score.
    let e = evolve(
        "Answer the task.",
        &EvolveOpts::default(),
        |m: Mutation| {
            let v = if m.variant == 0 {
                "   ".to_owned()
            } else {
                "  answer THE task. ".to_owned()
            };
            std::future::ready(Ok::<_, Infallible>(v))
        },
        score_virtue,
    )
    .await
    .unwrap();
    assert_eq!(e.scored, 1);
    assert!(e.generations.iter().all(|g| g.selection.ranked.len() == 1));

    // Zero generations still says how fit the base is.
    let e = evolve(
        "verify",
        &EvolveOpts {
            generations: 0,
            ..EvolveOpts::default()
        },
        append_word,
        score_virtue,
    )
    .await
    .unwrap();
    assert_eq!(
        (e.best.as_str(), e.improved, e.scored),
        ("verify", false, 1)
    );
    assert!((e.base_fitness - virtue("verify")).abs() < 1e-12);
}

/// Errors of a refine-driven evolution.
#[derive(Debug, PartialEq)]
enum EvoError {
    Smith(SmithError),
}

impl From<SmithError> for EvoError {
    fn from(e: SmithError) -> Self {
        EvoError::Smith(e)
    }
}

#[tokio::test]
async fn evolve_with_refine_mutates_through_the_prompt_smith() {
    // The model appends a virtue per refinement, cycling through a fixed list.
    let n = Arc::new(Mutex::new(0usize));
    let counter = n.clone();
    let (chat, seen) = host_chat(move |req| {
        let user = user_of(req);
        let current = user
            .strip_prefix("CURRENT PROMPT:\n")
            .and_then(|r| r.split("\n\nFEEDBACK:\n").next())
            .unwrap_or("")
            .to_owned();
        let mut i = counter.lock().unwrap();
        let word = ["ramble", "verify", "ground", "waffle"][*i % 4];
        *i += 1;
        Ok(format!("```\n{current} {word}\n```"))
    });
    let e = evolve_with_refine(
        &chat,
        "Solve it.",
        &EvolveOpts {
            generations: 2,
            variants: 2,
            margin: 0.0,
        },
        |p: &str| std::future::ready(Ok::<_, EvoError>(virtue(p))),
    )
    .await
    .unwrap();
    // Generation 0: "ramble" vs "verify"; generation 1: "verify ground" vs "verify waffle".
    assert_eq!(
        e.best, "Solve it. verify ground",
        "fenced replies are unwrapped"
    );
    assert_eq!(*n.lock().unwrap(), 4);
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(
        system_of(&reqs[0]),
        format!("{SMITH_SYSTEM}{REFINE_SUFFIX}")
    );
    assert!(user_of(&reqs[0]).starts_with("CURRENT PROMPT:\nSolve it.\n\nFEEDBACK:\n"));
    assert!(user_of(&reqs[0]).contains("not been scored yet"));
    assert!(user_of(&reqs[1]).contains("Write variant 2 of 2"));
    // The second generation's feedback carries the incumbent's score and last round's results.
    assert!(
        user_of(&reqs[2]).contains("fitness 0.970"),
        "{}",
        user_of(&reqs[2])
    );
    assert!(user_of(&reqs[2]).contains("v1 scored"));
    assert_eq!(reqs[0].max_tokens, Some(DEFAULT_SMITH_MAX_TOKENS));

    // A model that answers nothing stops the evolution with the smith's error.
    let (blank, _) = host_chat(|_| Ok("  \n".into()));
    let err = evolve_with_refine(&blank, "Solve it.", &EvolveOpts::default(), |p: &str| {
        std::future::ready(Ok::<_, EvoError>(virtue(p)))
    })
    .await
    .unwrap_err();
    assert_eq!(err, EvoError::Smith(SmithError::EmptyPrompt));
}

#[test]
fn metered_fitness_penalizes_cost_but_correctness_dominates() {
    let run = |correct: f64, steps: u64, tokens: u64, usd: f64| {
        metered_fitness(&RunMetrics {
            correct,
            steps,
            tokens,
            usd,
        })
    };
    assert!(
        run(1.0, 3, 1_000, 0.01) > run(1.0, 3, 50_000, 0.01),
        "tokens cost"
    );
    assert!(
        run(1.0, 3, 1_000, 0.01) > run(1.0, 3, 1_000, 2.0),
        "dollars cost"
    );
    assert!(
        run(1.0, 3, 1_000, 0.01) > run(1.0, 9, 1_000, 0.01),
        "steps cost"
    );
    assert!(
        run(1.0, 40, 200_000, 5.0) > run(0.0, 1, 10, 0.0),
        "a correct run beats a cheap wrong one"
    );
    assert_eq!(run(1.0, 5, 2_000, 0.5), 1000.0 - 10.0 - 2.0 - 5.0);
}

/// Score a prompt inside a process: run it once on the LLM device and price what the run
/// spent from the account's usage.
async fn metered_run(
    sys: &agentos_kernel::Sys,
    llm: &impl Chat,
    prompt: &str,
) -> Result<f64, ChatError> {
    let before = sys.usage();
    let req = ChatRequest::new(vec![
        ChatMessage::system(prompt),
        ChatMessage::user("What is 2 + 3?"),
    ]);
    let reply = llm.chat(req).await?;
    let after = sys.usage();
    let correct = if reply.content.contains('5') {
        1.0
    } else {
        0.0
    };
    Ok(metered_fitness(&RunMetrics::between(
        correct, 1, &before, &after,
    )))
}

#[test]
fn in_a_process_metered_fitness_picks_the_cheaper_of_two_correct_prompts() {
    // The verbose prompt makes the model think at length (and bill for it); both are right.
    let p = Arc::new(agentos_drivers::llm::ScriptedProvider::with(|req| {
        Ok(if system_of(req).contains("verbose") {
            reply_costing("Let me think at length... 5", 40_000, 20_000)
        } else {
            reply_costing("5", 200, 5)
        })
    }));
    let k = kernel(&p);
    let ran = in_process(&k, Quota::default(), |sys, llm| async move {
        let terse = "Answer tersely.";
        let verbose = "Be verbose and show all reasoning.";
        let mut fits = Vec::new();
        for prompt in [verbose, terse] {
            fits.push(metered_run(&sys, &llm, prompt).await);
        }
        let sel = select(
            verbose,
            vec![terse.to_owned()],
            |p: &str| {
                let (sys, llm, p) = (sys.clone(), llm.clone(), p.to_owned());
                async move { metered_run(&sys, &llm, &p).await }
            },
            1.0,
        )
        .await;
        (fits, sel)
    });
    assert_eq!(ran.exit, ExitReason::Normal);
    let (fits, sel) = ran.out.unwrap();
    let (verbose_fit, terse_fit) = (fits[0].clone().unwrap(), fits[1].clone().unwrap());
    // Verbose: 60,000 tokens and 40,000 + 2 × 20,000 µ$ = $0.08.
    assert!(
        (verbose_fit - (1000.0 - 2.0 - 60.0 - 0.8)).abs() < 1e-9,
        "{verbose_fit}"
    );
    // Terse: 205 tokens and 210 µ$.
    assert!(
        (terse_fit - (1000.0 - 2.0 - 0.205 - 0.0021)).abs() < 1e-9,
        "{terse_fit}"
    );
    let sel = sel.unwrap();
    assert!(sel.improved);
    assert_eq!(sel.winner, "Answer tersely.");
    // Every run was charged to the process: 2 direct runs and 2 in the tournament.
    assert_eq!(ran.usage.tokens, 2 * 60_000 + 2 * 205);
    assert_eq!(ran.usage.usd_micros, 2 * 80_000 + 2 * 210);
}
