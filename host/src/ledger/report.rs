//! Usage reports from the ledger: requests, errors, tokens, cost, latency
//! percentiles and feedback, grouped by provider, model, route, key, team
//! or day. What `/admin/usage` and `switchboard report` show.

use crate::access::calendar;
use rusqlite::{Connection, params};
use serde::Serialize;
use std::collections::BTreeMap;

/// What a report can group by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    Provider,
    Model,
    Route,
    Key,
    Team,
    Day,
}

impl Dimension {
    pub fn parse(list: &str) -> Result<Vec<Dimension>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| match name {
                "provider" => Ok(Dimension::Provider),
                "model" => Ok(Dimension::Model),
                "route" => Ok(Dimension::Route),
                "key" => Ok(Dimension::Key),
                "team" => Ok(Dimension::Team),
                "day" => Ok(Dimension::Day),
                other => Err(format!(
                    "cannot group by {other:?}: use provider, model, route, key, team or day"
                )),
            })
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Provider => "provider",
            Dimension::Model => "model",
            Dimension::Route => "route",
            Dimension::Key => "key",
            Dimension::Team => "team",
            Dimension::Day => "day",
        }
    }
}

/// One group's figures.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Row {
    /// The group's values, by dimension name (`-` for none).
    pub group: BTreeMap<&'static str, String>,
    pub requests: u64,
    /// Failed requests by error class.
    pub errors: BTreeMap<String, u64>,
    pub prompt_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    /// What the providers cost us (every attempt).
    pub provider_cost_usd: f64,
    /// What callers were charged (answering attempts).
    pub charged_usd: f64,
    pub latency_p50_ms: Option<u64>,
    pub latency_p95_ms: Option<u64>,
    pub ttft_p50_ms: Option<u64>,
    pub ttft_p95_ms: Option<u64>,
    pub feedback_count: u64,
    pub feedback_mean: Option<f64>,
}

#[derive(Default)]
struct Acc {
    row: Row,
    latencies: Vec<u64>,
    ttfts: Vec<u64>,
    /// The sum of every feedback score given to the group's requests.
    score_sum: f64,
}

/// Requests in `[since_ms, until_ms)`, grouped.
pub fn usage(
    conn: &Connection,
    by: &[Dimension],
    since_ms: i64,
    until_ms: i64,
) -> Result<Vec<Row>, rusqlite::Error> {
    let mut query = conn.prepare_cached(
        "SELECT r.provider, r.model, r.route, r.key_name, r.team, r.at_ms, r.status, r.error_class,
                r.prompt_tokens, r.cache_read_tokens, r.cache_write_tokens, r.completion_tokens,
                r.reasoning_tokens, r.provider_cost_usd, r.charged_usd, r.latency_ms, r.ttft_ms,
                (SELECT sum(f.score) FROM feedback f WHERE f.request_id = r.id),
                (SELECT count(*) FROM feedback f WHERE f.request_id = r.id)
         FROM requests r WHERE r.id >= ?1 AND r.id < ?2",
    )?;
    let mut groups: BTreeMap<Vec<String>, Acc> = BTreeMap::new();
    let mut rows = query.query(params![
        super::store::id_from(since_ms),
        super::store::id_from(until_ms)
    ])?;
    while let Some(r) = rows.next()? {
        let text = |i: usize| -> Result<String, rusqlite::Error> {
            Ok(r.get::<_, Option<String>>(i)?.unwrap_or_else(|| "-".into()))
        };
        let mut key = Vec::with_capacity(by.len());
        for dimension in by {
            key.push(match dimension {
                Dimension::Provider => text(0)?,
                Dimension::Model => text(1)?,
                Dimension::Route => text(2)?,
                Dimension::Key => text(3)?,
                Dimension::Team => text(4)?,
                Dimension::Day => calendar::format(r.get(5)?)[..10].to_string(),
            });
        }
        let acc = groups.entry(key).or_default();
        let row = &mut acc.row;
        row.requests += 1;
        let status: i64 = r.get(6)?;
        if status >= 400 {
            let class = r
                .get::<_, Option<String>>(7)?
                .unwrap_or_else(|| status.to_string());
            *row.errors.entry(class).or_default() += 1;
        } else if let Some(class) = r.get::<_, Option<String>>(7)? {
            // A stream that broke after its head.
            *row.errors.entry(class).or_default() += 1;
        }
        let n = |i: usize| -> Result<u64, rusqlite::Error> {
            Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0) as u64)
        };
        row.prompt_tokens += n(8)?;
        row.cache_read_tokens += n(9)?;
        row.cache_write_tokens += n(10)?;
        row.completion_tokens += n(11)?;
        row.reasoning_tokens += n(12)?;
        row.provider_cost_usd += r.get::<_, f64>(13)?;
        row.charged_usd += r.get::<_, f64>(14)?;
        if status < 400 {
            acc.latencies.push(r.get::<_, i64>(15)? as u64);
        }
        if let Some(ttft) = r.get::<_, Option<i64>>(16)? {
            acc.ttfts.push(ttft as u64);
        }
        // Every score counts once: a request scored twice weighs twice.
        acc.score_sum += r.get::<_, Option<f64>>(17)?.unwrap_or(0.0);
        acc.row.feedback_count += n(18)?;
    }
    Ok(groups
        .into_iter()
        .map(|(key, mut acc)| {
            acc.row.group = by.iter().map(|d| d.name()).zip(key).collect();
            acc.row.latency_p50_ms = percentile(&mut acc.latencies, 50);
            acc.row.latency_p95_ms = percentile(&mut acc.latencies, 95);
            acc.row.ttft_p50_ms = percentile(&mut acc.ttfts, 50);
            acc.row.ttft_p95_ms = percentile(&mut acc.ttfts, 95);
            let scores = acc.row.feedback_count;
            acc.row.feedback_mean = (scores > 0).then(|| acc.score_sum / scores as f64);
            acc.row
        })
        .collect())
}

/// The nearest-rank percentile.
fn percentile(values: &mut [u64], p: usize) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() * p).div_ceil(100).max(1) - 1;
    Some(values[rank])
}

/// `7d`, `24h`, `30m`: a span back from now, in milliseconds; or an
/// RFC 3339 date (`2026-12-01` or `2026-12-01T12:00:00Z`) as Unix ms.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let span = |n: &str, unit: i64| n.parse::<i64>().map(|n| now_ms - n * unit).ok();
    let relative = match text.char_indices().last() {
        Some((i, 'd')) => span(&text[..i], 86_400_000),
        Some((i, 'h')) => span(&text[..i], 3_600_000),
        Some((i, 'm')) => span(&text[..i], 60_000),
        _ => None,
    };
    if let Some(at) = relative {
        return Ok(at);
    }
    let date = |s: &str| -> Option<i64> {
        let mut parts = s.split('-');
        let y = parts.next()?.parse().ok()?;
        let m = parts.next()?.parse().ok()?;
        let d = parts.next()?.parse().ok()?;
        (parts.next().is_none() && (1..=12).contains(&m) && (1..=31).contains(&d))
            .then(|| calendar::days_from_civil(y, m, d) * 86_400_000)
    };
    let parsed = match text.split_once('T') {
        None => date(text),
        Some((day, time)) => date(day).and_then(|day| {
            let time = time.strip_suffix('Z')?;
            let mut parts = time.split(':').map(|p| p.parse::<i64>().ok());
            let (h, m, s) = (
                parts.next()??,
                parts.next()??,
                parts.next().flatten().unwrap_or(0),
            );
            Some(day + ((h * 60 + m) * 60 + s) * 1000)
        }),
    };
    parsed.ok_or_else(|| {
        format!("cannot read the time {text:?}: use 7d, 24h, 30m, 2026-12-01 or 2026-12-01T12:00:00Z")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_spans_back_or_utc_dates() {
        let now = 10 * 86_400_000;
        assert_eq!(parse_time("7d", now), Ok(3 * 86_400_000));
        assert_eq!(parse_time("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_time("1970-01-02", now), Ok(86_400_000));
        assert_eq!(
            parse_time("1970-01-02T01:00:00Z", now),
            Ok(86_400_000 + 3_600_000)
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(Dimension::parse("provider,colour").is_err());
        assert_eq!(percentile(&mut [5, 1, 3, 2, 4], 50), Some(3));
        assert_eq!(percentile(&mut [5, 1, 3, 2, 4], 95), Some(5));
    }
}
