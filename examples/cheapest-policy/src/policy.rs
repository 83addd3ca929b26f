wit_bindgen::generate!({ world: "policy", path: "../../wit" });
use exports::switchboard::plugin::router::*;

struct Cheapest;
impl Guest for Cheapest {
    fn describe() -> PolicyInfo { PolicyInfo { version: "1.0.0".into(), stateless: true } }
    fn validate_config(_config: String) -> Result<(), String> { Ok(()) }
    fn plan(_facts: RequestFacts, mut candidates: Vec<Candidate>, _config: String)
        -> Result<AttemptPlan, String> {
        candidates.sort_by(|a, b| a.output_price_per_mtok.total_cmp(&b.output_price_per_mtok));
        let attempts = candidates.into_iter().map(|c| Attempt { candidate: c.index, timeout_ms: None });
        Ok(AttemptPlan { attempts: attempts.collect(), hedge: Hedge::Route })
    }
}
export!(Cheapest);
