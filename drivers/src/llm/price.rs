//! Per-model prices, so a completion's cost includes micro-dollars.

use agentos_abi::device::TokenUsage;
use std::collections::BTreeMap;

/// What one model costs, in US dollars per million tokens (which is micro-dollars per token).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct ModelPrice {
    /// Uncached prompt tokens.
    pub input: f64,
    /// Prompt tokens served from the provider's cache.
    pub cached_input: f64,
    /// Completion tokens.
    pub output: f64,
}

/// Prices by model name. A model matches its exact name, else the longest listed name it
/// starts with (so `gpt-4o-mini-2024-07-18` is priced as `gpt-4o-mini`); an unknown model
/// costs no dollars (its tokens are still charged).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PriceTable {
    models: BTreeMap<String, ModelPrice>,
}

impl PriceTable {
    /// A table with no prices.
    pub fn empty() -> Self {
        PriceTable::default()
    }

    /// A table with list prices of some common models (USD per million tokens, as published
    /// by the providers when this table was written; override them for your contract).
    pub fn common() -> Self {
        let mut t = PriceTable::empty();
        for (name, input, cached_input, output) in [
            ("gpt-4o-mini", 0.15, 0.075, 0.60),
            ("gpt-4o", 2.50, 1.25, 10.00),
            ("gpt-4.1-mini", 0.40, 0.10, 1.60),
            ("gpt-4.1", 2.00, 0.50, 8.00),
            ("claude-3-5-haiku", 0.80, 0.08, 4.00),
            ("claude-sonnet-4", 3.00, 0.30, 15.00),
            ("claude-opus-4", 15.00, 1.50, 75.00),
        ] {
            t.set(
                name,
                ModelPrice {
                    input,
                    cached_input,
                    output,
                },
            );
        }
        t
    }

    /// Set (or replace) a model's price.
    pub fn set(&mut self, model: impl Into<String>, price: ModelPrice) -> &mut Self {
        self.models.insert(model.into(), price);
        self
    }

    /// The price of `model`, if listed (exact name, else longest listed prefix).
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        if let Some(p) = self.models.get(model) {
            return Some(*p);
        }
        self.models
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }

    /// Micro-dollars for `usage` on `model`, rounded up; 0 for an unlisted model.
    pub fn usd_micros(&self, model: &str, usage: &TokenUsage) -> u64 {
        let Some(p) = self.price(model) else {
            return 0;
        };
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let fresh = usage.prompt_tokens - cached;
        let micros = fresh as f64 * p.input
            + cached as f64 * p.cached_input
            + usage.completion_tokens as f64 * p.output;
        if micros.is_finite() && micros > 0.0 {
            micros.ceil() as u64
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_use_cached_rates_and_prefixes() {
        let t = PriceTable::common();
        let u = TokenUsage {
            prompt_tokens: 1000,
            completion_tokens: 100,
            cached_tokens: 400,
        };
        // 600 × 0.15 + 400 × 0.075 + 100 × 0.60 = 90 + 30 + 60
        assert_eq!(t.usd_micros("gpt-4o-mini", &u), 180);
        assert_eq!(t.usd_micros("gpt-4o-mini-2024-07-18", &u), 180);
        // 600 × 2.5 + 400 × 1.25 + 100 × 10
        assert_eq!(t.usd_micros("gpt-4o-2024-08-06", &u), 3000);
        assert_eq!(t.usd_micros("llama-local", &u), 0);
    }
}
