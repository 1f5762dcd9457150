//! Prompt evolution: score candidate prompts, keep the incumbent unless a challenger beats it by
//! a margin, and iterate over generations of mutations (the seed's `tournament`, `evolve` and
//! `meteredFitness`, extended to several generations).
//!
//! - [`tournament`] scores every candidate (in order, one at a time, so the scoring runs and
//!   their charges happen in a deterministic order) and ranks them best first; ties keep the
//!   candidates' order, and a fitness that is NaN ranks last.
//! - [`select`] is one round: the incumbent (`"baseline"`) against variants `v1..vn`; a variant
//!   wins only if its fitness exceeds the incumbent's by more than `margin`.
//! - [`evolve`] runs [`select`] over generations: each generation asks a mutator for variants of
//!   the current incumbent (for example [`refine_prompt`] with [`Mutation::feedback`]), drops
//!   blank ones and repeats, and scores each distinct prompt once per run (a prompt seen before
//!   keeps its fitness), so the incumbent is not paid for twice. [`evolve_with_refine`] is that
//!   loop with the prompt smith as the mutator.
//! - [`metered_fitness`] prices a run: correctness dominates, then steps, tokens and dollars
//!   count against it.
//!
//! Given a deterministic scorer and mutator the whole evolution is deterministic.

use crate::llm::Chat;
use crate::longmem::normalize;
use crate::promptsmith::{refine_prompt, SmithError, DEFAULT_SMITH_MAX_TOKENS};
use agentos_abi::Usage;
use std::collections::HashMap;
use std::future::Future;

/// The label of the incumbent in a round.
pub const BASELINE: &str = "baseline";

/// A prompt in a tournament.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The prompt.
    pub prompt: String,
    /// Its name in the ranking.
    pub label: String,
}

impl Candidate {
    /// A candidate.
    pub fn new(label: impl Into<String>, prompt: impl Into<String>) -> Self {
        Candidate {
            prompt: prompt.into(),
            label: label.into(),
        }
    }
}

/// A scored candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Its position among the candidates.
    pub index: usize,
    /// Its label.
    pub label: String,
    /// The prompt.
    pub prompt: String,
    /// Its fitness (higher is better).
    pub fitness: f64,
}

/// NaN ranks below everything.
fn rank_key(f: f64) -> f64 {
    if f.is_nan() {
        f64::NEG_INFINITY
    } else {
        f
    }
}

/// Score each candidate with `score` (one after another) and rank them best first; ties keep
/// the candidates' order. The first scoring error stops the tournament.
pub async fn tournament<F, Fut, E>(
    candidates: Vec<Candidate>,
    mut score: F,
) -> Result<Vec<Scored>, E>
where
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = Result<f64, E>>,
{
    let mut fitness = Vec::with_capacity(candidates.len());
    for c in &candidates {
        fitness.push(score(&c.prompt).await?);
    }
    Ok(rank(candidates, fitness))
}

/// Pair candidates with their fitness and rank them best first (ties keep their order).
fn rank(candidates: Vec<Candidate>, fitness: Vec<f64>) -> Vec<Scored> {
    let mut scored: Vec<Scored> = candidates
        .into_iter()
        .zip(fitness)
        .enumerate()
        .map(|(index, (c, fitness))| Scored {
            index,
            label: c.label,
            prompt: c.prompt,
            fitness,
        })
        .collect();
    scored.sort_by(|a, b| rank_key(b.fitness).total_cmp(&rank_key(a.fitness)));
    scored
}

/// The outcome of one round.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// The prompt to keep: the best variant if it won, else the incumbent.
    pub winner: String,
    /// Whether a variant won.
    pub improved: bool,
    /// The incumbent's fitness.
    pub baseline_fitness: f64,
    /// The winner's fitness.
    pub winner_fitness: f64,
    /// Everyone, best first (the incumbent is the candidate with index 0).
    pub ranked: Vec<Scored>,
}

/// Whether `challenger` beats `incumbent` by more than `margin`.
pub fn beats(challenger: f64, incumbent: f64, margin: f64) -> bool {
    rank_key(challenger) > rank_key(incumbent) + margin.max(0.0)
}

/// One round: `base` (labelled [`BASELINE`]) against `variants` (`v1`, `v2`, ...). The best
/// variant replaces the base only if it beats it by more than `margin` (a negative margin is 0).
pub async fn select<F, Fut, E>(
    base: &str,
    variants: Vec<String>,
    score: F,
    margin: f64,
) -> Result<Selection, E>
where
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = Result<f64, E>>,
{
    let ranked = tournament(round(base, variants), score).await?;
    Ok(decide(base, ranked, margin))
}

/// The candidates of a round: the incumbent first, then the variants.
fn round(base: &str, variants: Vec<String>) -> Vec<Candidate> {
    std::iter::once(Candidate::new(BASELINE, base))
        .chain(
            variants
                .into_iter()
                .enumerate()
                .map(|(i, p)| Candidate::new(format!("v{}", i + 1), p)),
        )
        .collect()
}

/// Keep `base` (candidate 0 of `ranked`) unless the top variant beats it by more than `margin`.
fn decide(base: &str, ranked: Vec<Scored>, margin: f64) -> Selection {
    let baseline_fitness = ranked
        .iter()
        .find(|s| s.index == 0)
        .map(|s| s.fitness)
        .unwrap_or(f64::NEG_INFINITY);
    let top = ranked.first().filter(|t| t.index != 0);
    let (winner, winner_fitness, improved) = match top {
        Some(t) if beats(t.fitness, baseline_fitness, margin) => {
            (t.prompt.clone(), t.fitness, true)
        }
        _ => (base.to_owned(), baseline_fitness, false),
    };
    Selection {
        winner,
        improved,
        baseline_fitness,
        winner_fitness,
        ranked,
    }
}

/// What a mutator is asked for: one variant of the incumbent.
#[derive(Clone, Debug, PartialEq)]
pub struct Mutation {
    /// The prompt to improve.
    pub incumbent: String,
    /// Its fitness, once scored (from the second generation on).
    pub fitness: Option<f64>,
    /// The generation (0-based).
    pub generation: u32,
    /// Which variant of the generation (0-based).
    pub variant: u32,
    /// How many variants the generation asks for.
    pub variants: u32,
    /// The previous generation's ranking (empty in the first).
    pub last: Vec<Scored>,
}

impl Mutation {
    /// Feedback for a refinement: the incumbent's score, how the last generation's challengers
    /// did, and which variant this is (so the variants of a generation differ).
    pub fn feedback(&self) -> String {
        let mut lines = Vec::new();
        match self.fitness {
            Some(f) => lines.push(format!(
                "The current prompt is the best so far, with fitness {f:.3} (higher is better)."
            )),
            None => lines.push("The current prompt has not been scored yet.".to_owned()),
        }
        let losers: Vec<String> = self
            .last
            .iter()
            .filter(|s| s.index != 0)
            .map(|s| format!("{} scored {:.3}", s.label, s.fitness))
            .collect();
        if !losers.is_empty() {
            lines.push(format!(
                "Last round's rewrites did not beat it: {}.",
                losers.join(", ")
            ));
        }
        lines.push(format!(
            "Write variant {} of {}: make one distinct, concrete improvement to the workflow or \
             quality bar that would raise task success and cut wasted steps and tokens.",
            self.variant + 1,
            self.variants
        ));
        lines.join("\n")
    }
}

/// How [`evolve`] runs.
#[derive(Clone, Debug, PartialEq)]
pub struct EvolveOpts {
    /// Generations to run.
    pub generations: u32,
    /// Variants asked for per generation.
    pub variants: u32,
    /// How much a challenger must beat the incumbent by.
    pub margin: f64,
}

impl Default for EvolveOpts {
    fn default() -> Self {
        EvolveOpts {
            generations: 3,
            variants: 2,
            margin: 0.0,
        }
    }
}

/// One generation of an evolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// Which (0-based).
    pub generation: u32,
    /// The round: the incumbent against this generation's variants.
    pub selection: Selection,
}

/// What [`evolve`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Evolution {
    /// The fittest prompt kept.
    pub best: String,
    /// Its fitness.
    pub fitness: f64,
    /// The starting prompt's fitness.
    pub base_fitness: f64,
    /// Whether `best` is not the starting prompt.
    pub improved: bool,
    /// Every generation, in order.
    pub generations: Vec<Generation>,
    /// Scoring runs made (each distinct prompt once).
    pub scored: usize,
}

/// Evolve `base` over `opts.generations` generations: `mutate` proposes `opts.variants`
/// variants of the incumbent per generation, [`select`] keeps the incumbent unless one beats it
/// by more than `opts.margin`. Each distinct prompt (by normalized text) is scored once.
pub async fn evolve<M, MFut, F, Fut, E>(
    base: &str,
    opts: &EvolveOpts,
    mut mutate: M,
    mut score: F,
) -> Result<Evolution, E>
where
    M: FnMut(Mutation) -> MFut,
    MFut: Future<Output = Result<String, E>>,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = Result<f64, E>>,
{
    let mut cache: HashMap<String, f64> = HashMap::new();
    let mut scored = 0usize;
    let mut incumbent = base.to_owned();
    let mut fitness: Option<f64> = None;
    let mut last: Vec<Scored> = Vec::new();
    let mut generations = Vec::new();
    let mut base_fitness = None;

    for generation in 0..opts.generations {
        let mut variants: Vec<String> = Vec::new();
        let mut keys = vec![normalize(&incumbent)];
        for variant in 0..opts.variants {
            let v = mutate(Mutation {
                incumbent: incumbent.clone(),
                fitness,
                generation,
                variant,
                variants: opts.variants,
                last: last.clone(),
            })
            .await?;
            let key = normalize(&v);
            if key.is_empty() || keys.contains(&key) {
                continue;
            }
            keys.push(key);
            variants.push(v.trim().to_owned());
        }
        let candidates = round(&incumbent, variants);
        let mut fits = Vec::with_capacity(candidates.len());
        for c in &candidates {
            let key = normalize(&c.prompt);
            let f = match cache.get(&key) {
                Some(f) => *f,
                None => {
                    let f = score(&c.prompt).await?;
                    scored += 1;
                    cache.insert(key, f);
                    f
                }
            };
            fits.push(f);
        }
        let selection = decide(&incumbent, rank(candidates, fits), opts.margin);
        base_fitness.get_or_insert(selection.baseline_fitness);
        incumbent = selection.winner.clone();
        fitness = Some(selection.winner_fitness);
        last = selection.ranked.clone();
        generations.push(Generation {
            generation,
            selection,
        });
    }

    let base_fitness = match base_fitness {
        Some(f) => f,
        // No generations: score the base alone, so the result still says how fit it is.
        None => {
            scored += 1;
            score(base).await?
        }
    };
    let fitness = fitness.unwrap_or(base_fitness);
    Ok(Evolution {
        improved: normalize(&incumbent) != normalize(base),
        best: incumbent,
        fitness,
        base_fitness,
        generations,
        scored,
    })
}

/// [`evolve`] with [`refine_prompt`] as the mutator, fed [`Mutation::feedback`]. Scoring errors
/// and smith errors share `E`.
pub async fn evolve_with_refine<C, F, Fut, E>(
    chat: &C,
    base: &str,
    opts: &EvolveOpts,
    score: F,
) -> Result<Evolution, E>
where
    C: Chat,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = Result<f64, E>>,
    E: From<SmithError>,
{
    evolve(
        base,
        opts,
        |m: Mutation| async move {
            refine_prompt(chat, &m.incumbent, &m.feedback(), DEFAULT_SMITH_MAX_TOKENS)
                .await
                .map_err(E::from)
        },
        score,
    )
    .await
}

/// What one scored run of a prompt cost and achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunMetrics {
    /// How correct the run was (1.0: solved; fractions for partial credit, summed over tasks).
    pub correct: f64,
    /// Steps taken.
    pub steps: u64,
    /// Tokens spent.
    pub tokens: u64,
    /// Dollars spent.
    pub usd: f64,
}

impl RunMetrics {
    /// The metrics of a run that spent `after - before` of an account (read with
    /// `Syscalls::usage` around the run).
    pub fn between(correct: f64, steps: u64, before: &Usage, after: &Usage) -> Self {
        RunMetrics {
            correct,
            steps,
            tokens: after.tokens.saturating_sub(before.tokens),
            usd: after.usd_micros.saturating_sub(before.usd_micros) as f64 / 1e6,
        }
    }
}

/// The seed's metered fitness: `1000 × correct − 2 × steps − tokens / 1000 − 10 × usd`.
/// Correctness dominates; among equally correct runs the cheaper one is fitter.
pub fn metered_fitness(r: &RunMetrics) -> f64 {
    r.correct * 1000.0 - r.steps as f64 * 2.0 - r.tokens as f64 / 1000.0 - r.usd * 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metered_fitness_matches_the_seed() {
        let r = RunMetrics {
            correct: 1.0,
            steps: 5,
            tokens: 2_000,
            usd: 0.5,
        };
        assert_eq!(metered_fitness(&r), 1000.0 - 10.0 - 2.0 - 5.0);
        assert_eq!(metered_fitness(&RunMetrics::default()), 0.0);
        let before = Usage {
            tokens: 10,
            usd_micros: 1_000_000,
            ..Usage::default()
        };
        let after = Usage {
            tokens: 1_010,
            usd_micros: 3_500_000,
            ..Usage::default()
        };
        assert_eq!(
            RunMetrics::between(1.0, 2, &before, &after),
            RunMetrics {
                correct: 1.0,
                steps: 2,
                tokens: 1_000,
                usd: 2.5
            }
        );
    }

    #[test]
    fn margins_are_strict_and_nan_never_wins() {
        assert!(beats(2.0, 1.0, 0.5));
        assert!(!beats(1.5, 1.0, 0.5));
        assert!(!beats(1.0, 1.0, -3.0));
        assert!(!beats(f64::NAN, 1.0, 0.0));
        assert!(beats(0.0, f64::NAN, 0.0));
    }
}
