//! Keys, teams, limits, budgets, feedback and reports: managed with the
//! `keys` and `teams` commands and `/admin/keys`, applied by a running
//! gateway within a second, and read back from the ledger.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// Two providers, a ledger, and the `search` team in the file.
fn config(a: &MockProvider, b: &MockProvider, route_extra: &str) -> String {
    format!(
        "[ledger]\npath = \"ledger.db\"\n[teams.search]\n{}",
        two_providers(a, b, route_extra)
    )
}

/// `switchboard keys create ...` on the gateway's config: the secret.
fn create_key(gw: &Gateway, args: &[&str]) -> (String, String) {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = gw.command(KEYS, &all);
    assert!(ok, "{stderr}");
    let secret = stdout
        .lines()
        .find(|l| l.starts_with("sk-sb-"))
        .expect("the secret is printed")
        .to_string();
    (secret, stdout)
}

async fn chat_as(gw: &Gateway, key: &str, body: &Value) -> Reply {
    let auth = format!("Bearer {key}");
    post_with(
        &gw.chat_url(),
        serde_json::to_vec(body).unwrap(),
        &[("authorization", &auth)],
    )
    .await
}

/// Wait (at most `within`) until a request with `key` gets `status`.
async fn until_status(gw: &Gateway, key: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if chat_as(gw, key, &chat("chat")).await.status == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "no {status} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn keys_made_with_the_command_apply_within_a_second_and_revoke_the_same_way() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&config(&a, &b, ""), KEYS);
    assert_eq!(
        post(&gw.chat_url(), &chat("chat")).await.status,
        200,
        "open until a key exists"
    );

    let (first, out) = create_key(&gw, &["--name", "ci", "--team", "search"]);
    assert!(
        out.contains("first gateway key"),
        "says the API is now closed: {out}"
    );
    assert_eq!(first.len(), 46);
    let took = until_status(&gw, "wrong", 401, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(1), "applied within a second: {took:?}");
    assert_eq!(
        post(&gw.chat_url(), &chat("chat")).await.status,
        401,
        "no key: refused"
    );
    assert_eq!(chat_as(&gw, &first, &chat("chat")).await.status, 200);

    let (second, out) = create_key(&gw, &["--name", "ops", "--admin"]);
    assert!(!out.contains("first gateway key"));
    let (ok, listed, _) = gw.command(KEYS, &["keys", "list"]);
    assert!(
        ok && listed.contains("ci\tsearch") && listed.contains("ops\t-\ttrue"),
        "{listed}"
    );
    assert!(
        !listed.contains(&first[6..]) && !listed.contains(&second[6..]),
        "no secret listed"
    );
    let db = rusqlite::Connection::open(gw.dir.path().join("ledger.db")).unwrap();
    let hashes: String = db
        .query_row("SELECT group_concat(hash) FROM keys", [], |r| r.get(0))
        .unwrap();
    assert!(!hashes.contains(&first[6..]), "only hashes are kept");

    let (ok, _, _) = gw.command(KEYS, &["keys", "revoke", "ci"]);
    assert!(ok);
    let took = until_status(&gw, &first, 401, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(1), "revoked within a second: {took:?}");
    assert_eq!(chat_as(&gw, &second, &chat("chat")).await.status, 200);

    // Bad input: a name clash, an unknown team, a negative budget.
    for (args, says) in [
        (vec!["--name", "ops"], "exists already"),
        (vec!["--name", "x", "--team", "nowhere"], "no team named"),
        (vec!["--name", "y", "--budget-usd", "-5"], "may not be negative"),
    ] {
        let mut all = vec!["keys", "create"];
        all.extend_from_slice(&args);
        let (ok, _, stderr) = gw.command(KEYS, &all);
        assert!(!ok && stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn admin_keys_need_an_admin_key_and_create_list_and_revoke() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&config(&a, &b, ""), KEYS);
    let keys_url = format!("{}/admin/keys", gw.url);
    // Open access is not enough to manage keys.
    let refused = post(&keys_url, &json!({"name": "x"})).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let (admin, _) = create_key(&gw, &["--name", "root", "--admin"]);
    until_status(&gw, "wrong", 401, Duration::from_secs(2)).await;
    let auth = format!("Bearer {admin}");
    let made = post_with(
        &keys_url,
        serde_json::to_vec(&json!({"name": "app", "team": "search", "rpm": 100})).unwrap(),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let made = made.json();
    let secret = made["secret"].as_str().unwrap().to_string();
    assert_eq!(made["key"]["rpm"], 100);
    until_status(&gw, &secret, 200, Duration::from_secs(2)).await;
    let clash = post_with(
        &keys_url,
        serde_json::to_vec(&json!({"name": "app"})).unwrap(),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(clash.status, 409);
    let listed = get(&keys_url, &[("authorization", &auth)]).await.json();
    let names: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "root"]);
    assert!(!listed.to_string().contains(&secret[6..]));
    // A key that is not an admin key may not.
    let plain = get(&keys_url, &[("authorization", &format!("Bearer {secret}"))]).await;
    assert_eq!(plain.status, 403);
    let revoked = send_delete(&format!("{keys_url}/app"), &auth).await;
    assert_eq!(revoked, 200);
    until_status(&gw, &secret, 401, Duration::from_secs(2)).await;
    assert_eq!(
        send_delete(&format!("{keys_url}/app"), &auth).await,
        404,
        "already revoked"
    );
}

async fn send_delete(url: &str, auth: &str) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let request = http::Request::delete(url)
        .header("authorization", auth)
        .body(http_body_util::Empty::new())
        .unwrap();
    client.request(request).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_key_over_its_rates_gets_429_with_retry_after_and_openai_headers() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&config(&a, &b, ""), KEYS);
    let (key, _) = create_key(&gw, &["--name", "slow", "--rpm", "2"]);
    until_status(&gw, "wrong", 401, Duration::from_secs(2)).await;
    let hits = a.hits();
    let first = chat_as(&gw, &key, &chat("chat")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit-requests"), "2");
    assert_eq!(first.header("x-ratelimit-remaining-requests"), "1");
    assert_eq!(
        chat_as(&gw, &key, &chat("chat"))
            .await
            .header("x-ratelimit-remaining-requests"),
        "0"
    );
    let over = chat_as(&gw, &key, &chat("chat")).await;
    assert_eq!(over.status, 429);
    let retry: u64 = over.header("retry-after").parse().unwrap();
    assert!(
        (25..=30).contains(&retry),
        "2 per minute: one back every 30 s, not {retry}"
    );
    assert_eq!(over.header("x-ratelimit-remaining-requests"), "0");
    assert!(over.header("x-ratelimit-reset-requests").ends_with('s'));
    let error = &over.json()["error"];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["type"], "requests");
    assert!(error["message"].as_str().unwrap().contains("`slow`"));
    assert_eq!(a.hits() - hits, 2, "the refused request never reached a provider");

    // Tokens per minute: a request whose estimate does not fit waits.
    let (tokens, _) = create_key(&gw, &["--name", "wordy", "--tpm", "40"]);
    until_status(&gw, &tokens, 200, Duration::from_secs(2)).await;
    let mut long = chat("chat");
    long["max_tokens"] = json!(35);
    let over = chat_as(&gw, &tokens, &long).await;
    assert_eq!(over.status, 429, "{}", over.text());
    assert_eq!(over.json()["error"]["type"], "tokens");
    assert_eq!(over.header("x-ratelimit-limit-tokens"), "40");
    let metrics = gw.metrics().await;
    for kind in ["requests", "tokens"] {
        let series = format!("switchboard_limit_rejections_total{{kind=\"{kind}\"}}");
        assert_eq!(sample(&metrics, &series), 1, "{metrics}");
    }
}

/// A key with this daily budget.
async fn budgeted(gw: &Gateway, name: &str, budget: &str) -> String {
    let (key, _) = create_key(gw, &["--name", name, "--budget-usd", budget, "--period", "day"]);
    until_loaded(gw).await;
    key
}

/// Wait until the gateway checks keys (the first key has been loaded).
async fn until_loaded(gw: &Gateway) {
    until_status(gw, "wrong", 401, Duration::from_secs(2)).await;
}

/// What the ledger says a key was charged.
async fn charged(gw: &Gateway, key: &str, requests: i64) -> f64 {
    let db = rusqlite::Connection::open(gw.dir.path().join("ledger.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (n, sum): (i64, f64) = db
            .query_row(
                "SELECT count(*), coalesce(sum(charged_usd), 0) FROM requests WHERE key_name = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if n >= requests || Instant::now() > deadline {
            assert_eq!(n, requests);
            return sum;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn racing_requests_overspend_a_budget_by_at_most_the_documented_bound_and_spend_survives_a_restart() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&config(&a, &b, ""), KEYS);
    // Each answer costs 25e-6 (11 prompt tokens at $1, 7 completion at $2
    // per million); each reserves its worst case, ~20e-6 (a 6-token prompt
    // estimate and max_tokens 7).
    let key = budgeted(&gw, "race", "0.0001").await;
    let mut request = chat("chat");
    request["max_tokens"] = json!(7);
    let replies = futures_util::future::join_all((0..50).map(|_| chat_as(&gw, &key, &request))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let admitted = replies.iter().filter(|r| r.status == 200).count() as i64;
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(admitted + refused.len() as i64, 50, "{statuses:?}");
    assert!(admitted >= 1 && !refused.is_empty(), "{admitted} admitted");
    let error = &refused[0].json()["error"];
    assert_eq!(error["code"], "budget_exceeded");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("key `race`")
            && message.contains("$0.0001 per day")
            && message.contains("resets at"),
        "{message}"
    );
    let series = "switchboard_limit_rejections_total{kind=\"budget\"}";
    assert_eq!(sample(&gw.metrics().await, series), refused.len() as u64);
    let spent = charged(&gw, "race", 50).await;
    // At most floor(budget / reservation) = 5 reservations fit at once, and
    // each of those may cost its answer's 25e-6 less its 20e-6 reserved more.
    let bound = 0.0001 + 5.0 * (25e-6 - 20e-6);
    assert!(spent <= bound + 1e-12, "spent {spent} > {bound}");
    assert!(spent >= 0.0001 - 25e-6, "the budget was used: {spent}");

    // After a restart the budget is still spent: the next request is refused.
    let gw = gw.restart(KEYS);
    let again = chat_as(&gw, &key, &request).await;
    assert_eq!(again.status, 429, "{}", again.text());
    assert_eq!(again.json()["error"]["code"], "budget_exceeded");
}

#[tokio::test]
async fn feedback_and_usage_reports_add_up_to_the_requests_made() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&config(&a, &b, ""), KEYS);
    let (admin, _) = create_key(&gw, &["--name", "ops", "--admin", "--team", "search"]);
    let (other, _) = create_key(&gw, &["--name", "other"]);
    until_loaded(&gw).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = chat_as(&gw, &admin, &chat("chat")).await;
        ids.push(reply.header("x-switchboard-request-id").to_string());
    }
    a.set_default(Script::Status(500, vec![], "{}".into()));
    let failed_over = post_with(
        &gw.chat_url(),
        serde_json::to_vec(&chat("chat")).unwrap(),
        &[
            ("authorization", &format!("Bearer {admin}")),
            ("x-request-id", "mine-1"),
        ],
    )
    .await;
    assert_eq!(failed_over.header("x-switchboard-provider"), "b");
    // Both failing: a request no one answered, counted by its error class.
    b.set_default(Script::Status(500, vec![], "{}".into()));
    let unanswered = chat_as(&gw, &admin, &chat("chat")).await;
    assert_eq!(unanswered.status, 502, "{}", unanswered.text());

    let feedback_url = format!("{}/v1/feedback", gw.url);
    let send = |key: String, body: Value| {
        let url = feedback_url.clone();
        async move {
            post_with(
                &url,
                serde_json::to_vec(&body).unwrap(),
                &[("authorization", &format!("Bearer {key}"))],
            )
            .await
        }
    };
    assert_eq!(
        send(
            admin.clone(),
            json!({"request_id": ids[0], "score": 1.0, "label": "good"})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        send(admin.clone(), json!({"request_id": ids[1], "score": 0.5}))
            .await
            .status,
        201
    );
    // A second opinion on the same answer counts as one more score.
    assert_eq!(
        send(admin.clone(), json!({"request_id": ids[1], "score": 0.0}))
            .await
            .status,
        201
    );
    // By the caller's own id.
    assert_eq!(
        send(admin.clone(), json!({"request_id": "mine-1", "score": 0.25}))
            .await
            .status,
        201
    );
    // Someone else's request, an unknown one, a bad score, not JSON.
    let foreign = send(other.clone(), json!({"request_id": ids[0], "score": 1.0})).await;
    assert_eq!(foreign.status, 404, "{}", foreign.text());
    assert_eq!(
        send(admin.clone(), json!({"request_id": "nope", "score": 1.0}))
            .await
            .status,
        404
    );
    let bad = send(admin.clone(), json!({"request_id": ids[0], "score": 7})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "score");
    let junk = post_with(
        &feedback_url,
        b"{not json".to_vec(),
        &[("authorization", &format!("Bearer {admin}"))],
    )
    .await;
    assert_eq!(junk.status, 400);

    charged(&gw, "ops", 5).await;
    let auth = format!("Bearer {admin}");
    let usage = get(
        &format!("{}/admin/usage?group_by=key,provider,model&since=1d", gw.url),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(usage.status, 200, "{}", usage.text());
    let rows = usage.json()["rows"].as_array().unwrap().clone();
    let row = |provider: &str| {
        // Requests made before the keys loaded were open and have no key.
        rows.iter()
            .find(|r| r["group"]["provider"] == provider && r["group"]["key"] == "ops")
            .unwrap()
            .clone()
    };
    let a_row = row("a");
    assert_eq!(a_row["requests"], 3);
    assert_eq!(a_row["prompt_tokens"], 33, "3 answers of 11 prompt tokens");
    assert_eq!(a_row["completion_tokens"], 21);
    assert_eq!(
        a_row["feedback_count"], 3,
        "every score, not every scored request"
    );
    assert_eq!(a_row["feedback_mean"], 0.5);
    assert!((a_row["charged_usd"].as_f64().unwrap() - 3.0 * 25e-6).abs() < 1e-12);
    assert!(a_row["latency_p50_ms"].as_u64().unwrap() <= a_row["latency_p95_ms"].as_u64().unwrap());
    assert_eq!(a_row["errors"], json!({}));
    let b_row = row("b");
    assert_eq!(
        (b_row["requests"].clone(), b_row["feedback_mean"].clone()),
        (json!(1), json!(0.25))
    );
    // `a`'s refusal cost nothing; `b`'s answer is both figures.
    for figure in ["provider_cost_usd", "charged_usd"] {
        assert!((b_row[figure].as_f64().unwrap() - 25e-6).abs() < 1e-12, "{b_row}");
    }
    let none = row("-");
    assert_eq!(none["requests"], 1);
    let errors = none["errors"].as_object().unwrap();
    assert_eq!(
        errors.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        1,
        "{none}"
    );
    assert!(
        none["latency_p50_ms"].is_null(),
        "failures are not timed as answers"
    );

    let by_team = get(
        &format!("{}/admin/usage?group_by=team,key&since=1d", gw.url),
        &[("authorization", &auth)],
    )
    .await
    .json();
    let search = by_team["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == json!({"team": "search", "key": "ops"}))
        .expect("a row for the team's key");
    assert_eq!(search["requests"], 5);
    let bad_group = get(
        &format!("{}/admin/usage?group_by=colour", gw.url),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(bad_group.status, 400);

    // The command prints the same numbers.
    let (ok, out, err) = gw.command(
        KEYS,
        &["report", "--by", "key,provider,model", "--since", "1d", "--json"],
    );
    assert!(ok, "{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(printed, json!(rows));
    let (ok, table, _) = gw.command(KEYS, &["report", "--by", "provider", "--since", "1d"]);
    assert!(ok && table.starts_with("provider  requests"), "{table}");
    assert!(table.contains("0.50 (3)"), "{table}");
}

#[tokio::test]
async fn the_config_files_keys_and_team_budgets_count_and_their_names_stay_theirs() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // A team budget of two answers (25e-6 each; each reserves ~20e-6 first).
    let config = format!(
        "[ledger]\npath = \"ledger.db\"\n[teams.ops]\nbudget_usd = 0.00005\nperiod = \"day\"\n\n\
         [[gateway_keys]]\nname = \"deploy\"\nkey_env = \"GW_DEPLOY\"\nteam = \"ops\"\ntpm = 1000\n{}",
        two_providers(&a, &b, "")
    );
    let env = [KEYS, &[("GW_DEPLOY", "gw-deploy-secret")]].concat();
    let gw = Gateway::start(&config, &env);
    let mut request = chat("chat");
    request["max_tokens"] = json!(7);
    let first = chat_as(&gw, "gw-deploy-secret", &request).await;
    assert_eq!(first.status, 200, "{}", first.text());
    // Token headers under the limit too: the reservation (a 6-token prompt
    // estimate and max_tokens 7) settled to the answer's 18 tokens.
    assert_eq!(first.header("x-ratelimit-limit-tokens"), "1000");
    assert_eq!(first.header("x-ratelimit-remaining-tokens"), "987");
    assert!(first.header("x-ratelimit-reset-tokens").ends_with('s'));
    assert_eq!(chat_as(&gw, "gw-deploy-secret", &request).await.status, 200);
    let over = chat_as(&gw, "gw-deploy-secret", &request).await;
    assert_eq!(over.status, 429, "{}", over.text());
    let error = &over.json()["error"];
    assert_eq!(error["code"], "budget_exceeded");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("team `ops`") && message.contains("$0.00005 per day"),
        "{message}"
    );
    // Three records (the refusal is recorded too), two answers charged.
    assert!((charged(&gw, "deploy", 3).await - 50e-6).abs() < 1e-12);

    // The file's key name cannot be taken by a key in the database (they
    // would share a budget and each other's requests); its team can be joined.
    let (ok, _, err) = gw.command(&env, &["keys", "create", "--name", "deploy"]);
    assert!(
        !ok && err.contains("a key named `deploy` exists already"),
        "{err}"
    );
    let (ok, out, err) = gw.command(&env, &["keys", "create", "--name", "ops-ci", "--team", "ops"]);
    assert!(ok && out.contains("sk-sb-"), "{err}");
}

#[tokio::test]
async fn the_cost_policy_turns_to_the_cheapest_as_a_budget_runs_low() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let route = r#"policy = "cost"
policy_config = { tiers = [ { targets = ["b/model-b"] } ], economy_below_budget = 0.5 }"#;
    let gw = Gateway::start(
        &format!("[budgets]\nkey_metrics = true\n{}", config(&a, &b, route)),
        KEYS,
    );
    let key = budgeted(&gw, "frugal", "0.0001").await;
    let mut request = chat("chat");
    request["max_tokens"] = json!(7);
    let mut answered_by = Vec::new();
    for _ in 0..4 {
        let reply = chat_as(&gw, &key, &request).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        answered_by.push(reply.header("x-switchboard-provider").to_string());
    }
    // 25e-6 an answer of a 1e-4 budget: 100 %, 75 % and 50 % left keep the
    // tier; 25 % left goes cheapest first.
    assert_eq!(answered_by, ["b", "b", "b", "a"]);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("switchboard_key_budget_spent_usd{key=\"frugal\"} 0.0001"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_teams_budget_made_with_the_command_is_counted_and_shown_in_metrics() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&config(&a, &b, ""), KEYS);
    let (ok, out, err) = gw.command(
        KEYS,
        &["teams", "create", "eng", "--budget-usd", "1", "--period", "week"],
    );
    assert!(ok && out.contains("$1.00/week"), "{out}{err}");
    let (key, _) = create_key(&gw, &["--name", "dev", "--team", "eng", "--budget-usd", "1"]);
    until_loaded(&gw).await;
    assert_eq!(chat_as(&gw, &key, &chat("chat")).await.status, 200);
    let metrics = gw.metrics().await;
    // Keys in the database are unbounded labels: none unless asked for.
    assert!(!metrics.contains("switchboard_key_budget"), "{metrics}");
    assert!(
        metrics.contains("switchboard_budget_spent_usd{team=\"eng\"} 0.000025"),
        "{metrics}"
    );
    assert!(metrics.contains("switchboard_budget_remaining_usd{team=\"eng\"} 0.999975"));
    let (ok, _, _) = gw.command(KEYS, &["teams", "set", "eng", "--no-budget"]);
    assert!(ok);
    let (_, listed, _) = gw.command(KEYS, &["teams", "list"]);
    assert!(listed.contains("eng\t-"), "{listed}");
    // The config file's team is changed in the file: a database team of the
    // same name would silently replace its budget.
    let (ok, _, err) = gw.command(KEYS, &["teams", "create", "search", "--budget-usd", "9"]);
    assert!(!ok && err.contains("configuration file"), "{err}");
    let (_, listed, _) = gw.command(KEYS, &["teams", "list"]);
    assert_eq!(listed.matches("search").count(), 1, "{listed}");
}
