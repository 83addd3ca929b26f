//! Who may call and what they may spend: gateway keys (from the config
//! file and from the ledger database), their teams, budgets by calendar
//! period, and request and token rates.

pub mod admit;
pub mod calendar;
pub mod limits;
pub mod store;
pub mod watch;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// A calendar period in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    pub fn parse(text: &str) -> Option<Period> {
        match text {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            _ => None,
        }
    }
}

/// At most `limit_usd` per calendar `period`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Budget {
    pub limit_usd: f64,
    pub period: Period,
}

impl Budget {
    /// A budget from its two settings: both or neither.
    pub fn from_parts(limit_usd: Option<f64>, period: Option<Period>) -> Result<Option<Budget>, String> {
        match (limit_usd, period) {
            (None, None) => Ok(None),
            (Some(limit), _) if !limit.is_finite() || limit < 0.0 => {
                Err(format!("a budget may not be negative ({limit})"))
            }
            (Some(limit_usd), Some(period)) => Ok(Some(Budget { limit_usd, period })),
            (Some(limit_usd), None) => Ok(Some(Budget {
                limit_usd,
                period: Period::Month,
            })),
            (None, Some(_)) => Err("a budget period needs a budget amount".into()),
        }
    }
}

/// What a gateway key may do.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub team: Option<String>,
    /// Routes it may use; all when none.
    pub models: Option<Vec<String>>,
    pub admin: bool,
    /// Requests and tokens per minute.
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub budget: Option<Budget>,
}

/// The keys and teams of the database, as last loaded.
#[derive(Default)]
pub struct Stored {
    /// Active keys by the SHA-256 of their secret.
    pub keys: HashMap<[u8; 32], Arc<KeyInfo>>,
    pub teams: HashMap<String, Option<Budget>>,
}

/// The database's keys and teams, swapped in whole when they change.
#[derive(Default)]
pub struct Keyring {
    stored: ArcSwap<Stored>,
}

impl Keyring {
    pub fn current(&self) -> Arc<Stored> {
        self.stored.load_full()
    }

    pub fn replace(&self, stored: Stored) {
        self.stored.store(Arc::new(stored));
    }
}

/// The SHA-256 of a secret: all the database keeps of it.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// A new gateway key: `sk-sb-` and 40 random alphanumerics (238 bits).
pub fn new_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("sk-sb-{}", Alphanumeric.sample_string(&mut rand::rng(), 40))
}
