wit_bindgen::generate!({ world: "policy", path: "../../wit" });
use exports::switchboard::plugin::router::{Attempt, Candidate, Guest, RequestFacts};

struct Cheapest;
impl Guest for Cheapest {
    fn validate_config(_config: String) -> Result<(), String> { Ok(()) }
    fn plan(_facts: RequestFacts, mut candidates: Vec<Candidate>, _config: String)
        -> Result<Vec<Attempt>, String> {
        candidates.sort_by(|a, b| a.output_price_per_mtok.total_cmp(&b.output_price_per_mtok));
        Ok(candidates.into_iter().map(|c| Attempt { candidate: c.index, timeout_ms: None }).collect())
    }
}
export!(Cheapest);
