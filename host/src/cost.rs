//! What an answer costs: a model's prices per kind of token, with tiers by
//! prompt size, applied to the usage an adapter reported.

use crate::plugin::types::Usage;
use serde::Deserialize;

/// USD per million tokens of each kind. Only `input` and `output` are
/// needed; the others default to the price they are a kind of.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub input: f64,
    pub output: f64,
    /// Prompt tokens read from the provider's cache (default: `input`).
    pub cached_input: f64,
    /// Prompt tokens written to the cache, default retention (default: `input`).
    pub cache_write: f64,
    /// Prompt tokens written to the cache for an hour (default: `cache_write`).
    pub cache_write_hour: f64,
    /// Reasoning tokens, a part of the completion (default: `output`).
    pub reasoning: f64,
}

/// A model's prices: base rates, and higher ones above a prompt size.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prices {
    pub base: Rates,
    /// `(above_prompt_tokens, rates)`, ascending: a request whose prompt is
    /// larger than the threshold pays those rates for all its tokens.
    pub tiers: Vec<(u32, Rates)>,
}

/// Prices as written in a model's table (`input_price`, ..., `tiers`).
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawRates {
    pub input_price: Option<f64>,
    pub output_price: Option<f64>,
    pub cached_input_price: Option<f64>,
    pub cache_write_price: Option<f64>,
    pub cache_write_hour_price: Option<f64>,
    pub reasoning_price: Option<f64>,
}

/// One tier: its threshold and the rates that change above it (the rest
/// are the model's).
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub above_prompt_tokens: u32,
    #[serde(flatten)]
    pub rates: RawRates,
}

impl RawRates {
    /// Fill in what is not given from the kind each price is a part of.
    fn resolve(&self) -> Result<Rates, String> {
        let input = self.input_price.unwrap_or(0.0);
        let output = self.output_price.unwrap_or(0.0);
        let cache_write = self.cache_write_price.unwrap_or(input);
        let rates = Rates {
            input,
            output,
            cached_input: self.cached_input_price.unwrap_or(input),
            cache_write,
            cache_write_hour: self.cache_write_hour_price.unwrap_or(cache_write),
            reasoning: self.reasoning_price.unwrap_or(output),
        };
        let all = [
            rates.input,
            rates.output,
            rates.cached_input,
            rates.cache_write,
            rates.cache_write_hour,
            rates.reasoning,
        ];
        if all.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err("prices may not be negative".into());
        }
        Ok(rates)
    }
}

impl Prices {
    pub fn from_raw(base: &RawRates, tiers: &[RawTier]) -> Result<Prices, String> {
        let base_rates = base.resolve()?;
        let mut resolved = Vec::with_capacity(tiers.len());
        for tier in tiers {
            // Unset prices of a tier follow the model's own settings.
            let merged = RawRates {
                input_price: tier.rates.input_price.or(base.input_price),
                output_price: tier.rates.output_price.or(base.output_price),
                cached_input_price: tier.rates.cached_input_price.or(base.cached_input_price),
                cache_write_price: tier.rates.cache_write_price.or(base.cache_write_price),
                cache_write_hour_price: tier.rates.cache_write_hour_price.or(base.cache_write_hour_price),
                reasoning_price: tier.rates.reasoning_price.or(base.reasoning_price),
            };
            resolved.push((tier.above_prompt_tokens, merged.resolve()?));
        }
        if resolved.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err("tiers must be in ascending order of above_prompt_tokens".into());
        }
        Ok(Prices {
            base: base_rates,
            tiers: resolved,
        })
    }

    /// The rates a request with this many prompt tokens pays.
    pub fn rates(&self, prompt_tokens: u32) -> &Rates {
        self.tiers
            .iter()
            .rev()
            .find(|(above, _)| prompt_tokens > *above)
            .map_or(&self.base, |(_, rates)| rates)
    }

    /// The cost of one answer in USD. Cache reads and writes are parts of
    /// the prompt and reasoning a part of the completion, each priced at
    /// its own rate and never counted twice.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let r = self.rates(usage.prompt_tokens);
        let read = usage.cache_read_tokens.min(usage.prompt_tokens);
        let write = usage.cache_write_tokens.min(usage.prompt_tokens - read);
        let hour = usage.cache_write_hour_tokens.min(write);
        let plain_input = usage.prompt_tokens - read - write;
        let reasoning = usage.reasoning_tokens.min(usage.completion_tokens);
        let plain_output = usage.completion_tokens - reasoning;
        let micro = plain_input as f64 * r.input
            + read as f64 * r.cached_input
            + (write - hour) as f64 * r.cache_write
            + hour as f64 * r.cache_write_hour
            + plain_output as f64 * r.output
            + reasoning as f64 * r.reasoning;
        micro / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u32, read: u32, write: u32, hour: u32, completion: u32, reasoning: u32) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cache_read_tokens: read,
            cache_write_tokens: write,
            cache_write_hour_tokens: hour,
            reasoning_tokens: reasoning,
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn only_input_and_output_given_prices_every_part_at_those() {
        let prices = Prices::from_raw(
            &RawRates {
                input_price: Some(3.0),
                output_price: Some(15.0),
                ..RawRates::default()
            },
            &[],
        )
        .unwrap();
        // 1000 prompt tokens at $3/M and 500 completion tokens at $15/M,
        // however they split into cached or reasoning parts.
        close(prices.cost(&usage(1000, 0, 0, 0, 500, 0)), 0.003 + 0.0075);
        close(prices.cost(&usage(1000, 400, 100, 50, 500, 200)), 0.003 + 0.0075);
    }

    #[test]
    fn each_kind_at_its_own_rate_and_never_twice() {
        // Anthropic Sonnet-like: $3 input, $0.30 cache read, $3.75 5-minute
        // writes, $6 one-hour writes, $15 output.
        let prices = Prices::from_raw(
            &RawRates {
                input_price: Some(3.0),
                output_price: Some(15.0),
                cached_input_price: Some(0.3),
                cache_write_price: Some(3.75),
                cache_write_hour_price: Some(6.0),
                reasoning_price: None,
            },
            &[],
        )
        .unwrap();
        // 10 plain + 100 read + 30 written (20 for an hour) prompt tokens;
        // 7 completion tokens, 3 of them reasoning (priced as output).
        let cost = prices.cost(&usage(140, 100, 30, 20, 7, 3));
        let by_hand = (10.0 * 3.0 + 100.0 * 0.3 + 10.0 * 3.75 + 20.0 * 6.0 + 7.0 * 15.0) / 1e6;
        close(cost, by_hand);
    }

    #[test]
    fn a_separate_reasoning_price_applies_to_the_reasoning_part_only() {
        let prices = Prices::from_raw(
            &RawRates {
                input_price: Some(1.0),
                output_price: Some(4.0),
                reasoning_price: Some(8.0),
                ..RawRates::default()
            },
            &[],
        )
        .unwrap();
        close(
            prices.cost(&usage(0, 0, 0, 0, 100, 40)),
            (60.0 * 4.0 + 40.0 * 8.0) / 1e6,
        );
    }

    #[test]
    fn a_tier_above_a_prompt_size_prices_the_whole_request() {
        // Gemini 2.5 Pro-like: $1.25/$10, and $2.50/$15 above 200k prompt tokens.
        let prices = Prices::from_raw(
            &RawRates {
                input_price: Some(1.25),
                output_price: Some(10.0),
                cached_input_price: Some(0.31),
                ..RawRates::default()
            },
            &[RawTier {
                above_prompt_tokens: 200_000,
                rates: RawRates {
                    input_price: Some(2.5),
                    output_price: Some(15.0),
                    cached_input_price: Some(0.625),
                    ..RawRates::default()
                },
            }],
        )
        .unwrap();
        close(
            prices.cost(&usage(200_000, 0, 0, 0, 1000, 0)),
            (200_000.0 * 1.25 + 1000.0 * 10.0) / 1e6,
        );
        close(
            prices.cost(&usage(200_001, 1, 0, 0, 1000, 0)),
            (200_000.0 * 2.5 + 0.625 + 1000.0 * 15.0) / 1e6,
        );
    }

    #[test]
    fn counts_beyond_their_totals_are_capped_and_bad_prices_refused() {
        let prices = Prices::from_raw(
            &RawRates {
                input_price: Some(1.0),
                output_price: Some(1.0),
                ..RawRates::default()
            },
            &[],
        )
        .unwrap();
        // A provider that reports more cached than prompt tokens is not paid twice.
        close(prices.cost(&usage(10, 50, 50, 50, 5, 50)), 15.0 / 1e6);
        let negative = RawRates {
            cache_write_price: Some(-1.0),
            ..RawRates::default()
        };
        assert!(Prices::from_raw(&negative, &[]).is_err());
        let tier = |above| RawTier {
            above_prompt_tokens: above,
            rates: RawRates::default(),
        };
        assert!(Prices::from_raw(&RawRates::default(), &[tier(10), tier(5)]).is_err());
    }
}
