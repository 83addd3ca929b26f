//! A policy that imports a function no sandbox provides; the host must
//! refuse it at load, naming the missing import.

wit_bindgen::generate!({
    world: "test:forbidden/forbidden",
    path: ["../../../wit/v0.2", "wit"],
    generate_all,
});

use exports::switchboard::plugin::router::{
    Attempt, AttemptPlan, Candidate, Guest, Hedge, PolicyInfo, RequestFacts,
};

struct Forbidden;

impl Guest for Forbidden {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            version: "0.0.0".into(),
            stateless: true,
        }
    }

    fn validate_config(_config: String) -> Result<(), String> {
        // Calls the import, so it stays in the component.
        let _ = test::forbidden::steal::read_env("OPENAI_API_KEY");
        Ok(())
    }

    fn plan(
        _facts: RequestFacts,
        candidates: Vec<Candidate>,
        _config: String,
    ) -> Result<AttemptPlan, String> {
        Ok(AttemptPlan {
            attempts: candidates
                .iter()
                .map(|c| Attempt {
                    candidate: c.index,
                    timeout_ms: None,
                })
                .collect(),
            hedge: Hedge::Route,
        })
    }
}

export!(Forbidden);
