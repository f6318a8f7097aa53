//! The control plane driven over real HTTP (reqwest against 127.0.0.1), as a
//! connector would drive it. Lease expiry is reached by skewing the control
//! plane's clock or by a held long poll waking at expiry; waits use the
//! control plane's own signals (held polls, results, outage), never sleeps.

use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};

use super::*;
use crate::protocol::parse_rfc3339;

const TOKEN: &str = "sandbox-connector-token";
/// Generous bound for things that should happen "at once".
const PROMPT: Duration = Duration::from_secs(5);

async fn start() -> ControlPlane {
    ControlPlane::start(ControlPlaneOptions::default())
        .await
        .expect("control plane starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// POSTs `body` to `/v1/connectors/sandbox/{rest}` with `token`.
async fn v1_as(cp: &ControlPlane, token: Option<&str>, rest: &str, body: &Value) -> Answer {
    let url = format!("{}/v1/connectors/{}/{rest}", cp.url(), cp.connector_id());
    send(post(&url, token).json(body)).await
}

async fn v1(cp: &ControlPlane, rest: &str, body: &Value) -> Answer {
    v1_as(cp, Some(TOKEN), rest, body).await
}

fn post(url: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let req = client().post(url);
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("answered");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

fn lease_req(max: u64, wait: u64, lease: u64) -> Value {
    json!({"instance_id": "i-1", "max_actions": max, "wait_seconds": wait, "lease_seconds": lease})
}

async fn lease(cp: &ControlPlane, max: u64, wait: u64, lease: u64) -> Vec<Value> {
    let a = v1(cp, "lease", &lease_req(max, wait, lease)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["actions"].as_array().expect("actions").clone()
}

fn action(id: &str) -> Value {
    json!({"id": id, "integration": "orders-db", "event_type": "grant-access",
           "params": {"grant_id": "g-1", "username": "alice@example.com", "resource_type": "db",
                      "resources": ["orders"], "permission": "read"},
           "created_at": "2027-01-15T08:00:00Z"})
}

fn result(id: &str, token: Option<&str>, outcome: &str) -> Value {
    let error = if outcome == "failed" {
        json!({"code": "function_error", "message": "boom", "retryable": false})
    } else {
        Value::Null
    };
    let mut r = json!({"action_id": id, "outcome": outcome, "error": error,
        "function": {"url": "http://127.0.0.1:1/f", "status": 200, "body": {"status": "ok"}, "latency_ms": 4},
        "attempts": 1, "started_at": "2027-01-15T08:00:00Z", "finished_at": "2027-01-15T08:00:01Z",
        "instance_id": "grantbridge-0/3f9c", "connector_version": "0.1.0"});
    if let Some(t) = token {
        r["lease_token"] = json!(t);
    }
    r
}

fn token_of(leased: &Value) -> String {
    leased["lease"]["token"]
        .as_str()
        .expect("lease token")
        .to_owned()
}

fn ids(actions: &[Value]) -> Vec<&str> {
    actions.iter().filter_map(|a| a["id"].as_str()).collect()
}

/// Moves the control plane's clock `secs` ahead of the host's.
fn skew(cp: &ControlPlane, secs: i64) {
    cp.set_clock(Clock::system().skewed(secs));
}

#[tokio::test]
async fn calls_need_a_live_connector_token_and_the_right_connector_id() {
    let cp = start().await;
    let body = lease_req(1, 0, 30);
    let missing = v1_as(&cp, None, "lease", &body).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.body,
        json!({"error": "unauthenticated", "message": "connector token is missing, wrong or revoked"})
    );
    let wrong = v1_as(&cp, Some("guess"), "lease", &body).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    // Rotation: both tokens work, then the old one is revoked.
    cp.add_token("rotated");
    assert_eq!(
        v1_as(&cp, Some("rotated"), "lease", &body).await.status,
        StatusCode::OK
    );
    assert_eq!(
        v1_as(&cp, Some(TOKEN), "lease", &body).await.status,
        StatusCode::OK
    );
    cp.revoke_token(TOKEN);
    let revoked = v1_as(&cp, Some(TOKEN), "heartbeat", &json!({})).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(revoked.body["error"], "unauthenticated");

    let url = format!("{}/v1/connectors/someone-else/lease", cp.url());
    let other = send(post(&url, Some("rotated")).json(&body)).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(other.body["error"], "not_found");
    // Auth comes first: a wrong connector id does not leak without a token.
    assert_eq!(
        send(post(&url, None).json(&body)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let unknown = v1_as(&cp, Some("rotated"), "nonsense", &body).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let calls = cp.calls();
    assert_eq!(calls.unauthorized(), 4);
    assert_eq!(calls.lease, 6);
    assert_eq!(calls.heartbeat, 1);
    assert_eq!(calls.other, 1);
    assert_eq!(calls.with_status(404), 2);
    assert_eq!(calls.total(), 8);
}

#[tokio::test]
async fn lease_hands_out_the_oldest_actions_with_a_token_and_an_expiry() {
    let cp = start().await;
    cp.enqueue_many(vec![action("a"), action("b"), action("c")]);
    assert_eq!(cp.enqueue(action("d")), "d");
    let before = SystemTime::now();
    let first = lease(&cp, 2, 0, 30).await;
    assert_eq!(ids(&first), ["a", "b"]);
    assert_eq!(
        first[0]["params"]["grant_id"], "g-1",
        "the action as enqueued"
    );
    assert_eq!(first[0]["created_at"], "2027-01-15T08:00:00Z");
    let expires = parse_rfc3339(
        first[0]["lease"]["expires_at"]
            .as_str()
            .expect("expires_at"),
    )
    .expect("RFC 3339");
    let lease_len = expires.duration_since(before).expect("in the future");
    assert!(
        lease_len >= Duration::from_secs(30) && lease_len <= Duration::from_secs(32),
        "{lease_len:?}"
    );
    assert_ne!(token_of(&first[0]), token_of(&first[1]));
    assert_eq!(ids(&lease(&cp, 10, 0, 30).await), ["c", "d"]);
    assert!(lease(&cp, 10, 0, 30).await.is_empty(), "all leased");
    assert_eq!(cp.leases_issued("a"), 1);
    assert_eq!(cp.pending(), 4);
    assert_eq!(cp.leased(), 4);
}

#[tokio::test]
async fn lease_rejects_bad_requests_with_a_reason() {
    let cp = start().await;
    for (body, field) in [
        (
            json!({"max_actions": 1, "wait_seconds": 0, "lease_seconds": 30}),
            "instance_id",
        ),
        (lease_req(0, 0, 30), "max_actions"),
        (lease_req(1, 31, 30), "wait_seconds"),
        (lease_req(1, 0, 0), "lease_seconds"),
        (json!([1, 2]), "object"),
    ] {
        let a = v1(&cp, "lease", &body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            a.body["message"].as_str().expect("message").contains(field),
            "{}",
            a.body
        );
    }
    let url = format!("{}/v1/connectors/sandbox/lease", cp.url());
    let garbage = send(
        post(&url, Some(TOKEN))
            .header("content-type", "application/json")
            .body("{nope"),
    )
    .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert!(
        garbage.body["message"]
            .as_str()
            .expect("m")
            .contains("JSON")
    );
    let plain = send(post(&url, Some(TOKEN)).body("{}")).await;
    assert_eq!(plain.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = json!({"instance_id": "x".repeat(routes::MAX_BODY_BYTES)});
    let too_large = send(post(&url, Some(TOKEN)).json(&huge)).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.body["error"], "payload_too_large");
}

#[tokio::test]
async fn a_leased_action_comes_back_only_after_its_lease_expires() {
    let cp = start().await;
    cp.enqueue(action("a"));
    let first = lease(&cp, 1, 0, 30).await;
    assert!(lease(&cp, 1, 0, 30).await.is_empty(), "not before expiry");
    skew(&cp, 29);
    assert!(lease(&cp, 1, 0, 30).await.is_empty(), "still not");
    skew(&cp, 32);
    let again = lease(&cp, 1, 0, 30).await;
    assert_eq!(ids(&again), ["a"]);
    assert_ne!(token_of(&again[0]), token_of(&first[0]), "a fresh token");
    assert_eq!(cp.leases_issued("a"), 2);
}

#[tokio::test]
async fn a_held_poll_wakes_when_a_lease_expires() {
    let cp = start().await;
    cp.enqueue(action("a"));
    let first = lease(&cp, 1, 0, 1).await;
    let expires =
        parse_rfc3339(first[0]["lease"]["expires_at"].as_str().expect("expiry")).expect("RFC 3339");
    // Nothing is available now; the poll is held until the 1 s lease ends,
    // well before its 20 s deadline.
    let started = Instant::now();
    let again = lease(&cp, 1, 20, 30).await;
    assert_eq!(ids(&again), ["a"]);
    assert!(SystemTime::now() >= expires, "not before the expiry");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woke at expiry"
    );
    assert_eq!(cp.leases_issued("a"), 2);
}

#[tokio::test]
async fn a_long_poll_is_held_and_answers_as_soon_as_an_action_arrives() {
    let cp = Arc::new(start().await);
    let poller = {
        let cp = cp.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (lease(&cp, 5, 30, 30).await, started.elapsed())
        })
    };
    tokio::time::timeout(PROMPT, cp.wait_for_held_polls(1))
        .await
        .expect("the poll is held");
    assert!(!poller.is_finished(), "held, not answered");
    cp.enqueue(action("late"));
    let (actions, took) = tokio::time::timeout(PROMPT, poller)
        .await
        .expect("answered at once")
        .expect("task");
    assert_eq!(ids(&actions), ["late"]);
    assert!(took < Duration::from_secs(30));
    assert_eq!(*cp.shared.held.borrow(), 0, "no longer held");
}

#[tokio::test]
async fn an_empty_long_poll_answers_empty_at_its_deadline() {
    let cp = start().await;
    let started = Instant::now();
    let actions = lease(&cp, 1, 1, 30).await;
    let took = started.elapsed();
    assert!(actions.is_empty());
    assert!(took >= Duration::from_millis(990), "{took:?}");
    assert!(took < PROMPT, "{took:?}");
}

#[tokio::test]
async fn extend_keeps_only_the_live_current_lease() {
    let cp = start().await;
    cp.enqueue(action("a"));
    let leased = lease(&cp, 1, 0, 10).await;
    let token = token_of(&leased[0]);
    let ok = v1(
        &cp,
        "actions/a/extend",
        &json!({"lease_token": token, "lease_seconds": 60}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let expires =
        parse_rfc3339(ok.body["expires_at"].as_str().expect("expires_at")).expect("RFC 3339");
    assert!(expires >= SystemTime::now() + Duration::from_secs(59));
    skew(&cp, 30);
    assert!(lease(&cp, 1, 0, 10).await.is_empty(), "extended past 10 s");

    let wrong = v1(
        &cp,
        "actions/a/extend",
        &json!({"lease_token": "lt_forged", "lease_seconds": 60}),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::CONFLICT);
    assert_eq!(wrong.body["error"], "lease_lost");
    let unknown = v1(
        &cp,
        "actions/nope/extend",
        &json!({"lease_token": token, "lease_seconds": 60}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad = v1(&cp, "actions/a/extend", &json!({"lease_token": token})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    skew(&cp, 61);
    let expired = v1(
        &cp,
        "actions/a/extend",
        &json!({"lease_token": token, "lease_seconds": 60}),
    )
    .await;
    assert_eq!(expired.status, StatusCode::CONFLICT);
    assert!(
        expired.body["message"]
            .as_str()
            .expect("m")
            .contains("expired")
    );
    assert_eq!(cp.calls().extend, 5);
}

#[tokio::test]
async fn results_are_idempotent_and_the_first_stands() {
    let cp = start().await;
    cp.enqueue_many(vec![action("a"), action("b")]);
    let leased = lease(&cp, 2, 0, 30).await;
    let (ta, tb) = (token_of(&leased[0]), token_of(&leased[1]));
    let a = v1(
        &cp,
        "results",
        &json!({"results": [
            result("a", Some(&ta), "succeeded"),
            result("b", Some(&ta), "succeeded"),
            result("ghost", Some(&ta), "succeeded"),
        ]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["accepted"], json!(["a"]));
    assert_eq!(
        a.body["rejected"],
        json!([{"action_id": "b", "reason": "lease token does not match"},
               {"action_id": "ghost", "reason": "unknown action"}])
    );

    // The same action again, now failed: accepted, but the first stands.
    let dup = v1(
        &cp,
        "results",
        &json!({"results": [result("a", Some(&ta), "failed"), result("b", Some(&tb), "failed")]}),
    )
    .await;
    assert_eq!(dup.body["accepted"], json!(["a", "b"]));
    let ra = cp.result("a").expect("a has a result");
    assert_eq!(ra.reports, 2);
    assert_eq!(ra.result["outcome"], "succeeded");
    assert!(ra.parsed.succeeded());
    assert_eq!(ra.instance_id.as_deref(), Some("grantbridge-0/3f9c"));
    assert_eq!(ra.lease_token.as_deref(), Some(ta.as_str()));
    assert_eq!(cp.result("b").expect("b").reports, 1);
    assert_eq!(cp.pending(), 0);
    skew(&cp, 60);
    assert!(
        lease(&cp, 5, 0, 30).await.is_empty(),
        "done actions never come back"
    );
}

#[tokio::test]
async fn a_late_result_from_an_expired_lease_is_accepted() {
    let cp = start().await;
    cp.enqueue(action("a"));
    let first = token_of(&lease(&cp, 1, 0, 30).await[0]);
    skew(&cp, 31);
    let second = token_of(&lease(&cp, 1, 0, 30).await[0]);
    let late = v1(
        &cp,
        "results",
        &json!({"results": [result("a", Some(&first), "succeeded")]}),
    )
    .await;
    assert_eq!(late.body["accepted"], json!(["a"]));
    let r = cp.result("a").expect("recorded");
    assert_eq!(r.lease_token.as_deref(), Some(first.as_str()));
    let current = v1(
        &cp,
        "results",
        &json!({"results": [result("a", Some(&second), "failed")]}),
    )
    .await;
    assert_eq!(current.body["accepted"], json!(["a"]), "duplicate");
    assert_eq!(cp.result("a").expect("r").reports, 2);
    assert_eq!(cp.leases_issued("a"), 2);
}

#[tokio::test]
async fn a_malformed_entry_does_not_sink_the_batch() {
    let cp = start().await;
    cp.enqueue(action("a"));
    let t = token_of(&lease(&cp, 1, 0, 30).await[0]);
    let mut no_outcome = result("a", Some(&t), "succeeded");
    no_outcome.as_object_mut().expect("obj").remove("outcome");
    let answer = v1(
        &cp,
        "results",
        &json!({"results": [
            "not an object",
            {"action_id": 42},
            no_outcome,
            result("a", Some(&t), "succeeded"),
            result("pushed-1", None, "failed"),
        ]}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["accepted"], json!(["a", "pushed-1"]));
    let rejected = answer.body["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 3);
    assert_eq!(rejected[1]["action_id"], 42);
    assert!(
        rejected[2]["reason"]
            .as_str()
            .expect("reason")
            .contains("outcome"),
        "{}",
        rejected[2]
    );
    let pushed = cp.result("pushed-1").expect("a pushed action's result");
    assert!(pushed.pushed);
    assert_eq!(pushed.lease_token, None);
    assert_eq!(cp.results().len(), 2);

    let not_a_batch = v1(&cp, "results", &json!({"result": []})).await;
    assert_eq!(not_a_batch.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn heartbeats_are_kept_per_instance() {
    let cp = start().await;
    let hb = |n: u64| {
        json!({"instance_id": "grantbridge-0/3f9c", "version": "0.1.0", "started_at": "2027-01-15T08:00:00Z",
               "integrations": [{"name": "orders-db", "function_url": "http://f", "status": "ok", "detail": null}],
               "stats": {"succeeded": n}})
    };
    let a = v1(&cp, "heartbeat", &hb(1)).await;
    assert_eq!((a.status, a.body), (StatusCode::OK, json!({})));
    v1(&cp, "heartbeat", &hb(2)).await;
    let mut other = hb(0);
    other["instance_id"] = json!("grantbridge-1/77aa");
    v1(&cp, "heartbeat", &other).await;
    let beats = cp.heartbeats();
    assert_eq!(beats.len(), 2);
    let (latest, at) = &beats["grantbridge-0/3f9c"];
    assert_eq!(latest["stats"]["succeeded"], 2, "the latest is kept");
    assert!(at.elapsed().expect("in the past") < PROMPT);

    let mut bad = hb(3);
    bad["integrations"][0]["status"] = json!("fine");
    let rejected = v1(&cp, "heartbeat", &bad).await;
    assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
    assert!(
        rejected.body["message"]
            .as_str()
            .expect("m")
            .contains("status")
    );
}

#[tokio::test]
async fn unavailable_answers_503_with_retry_after() {
    let cp = start().await;
    cp.set_outage(Outage::Unavailable);
    for token in [Some(TOKEN), None] {
        let a = v1_as(&cp, token, "lease", &lease_req(1, 0, 30)).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.headers[RETRY_AFTER], "1");
    }
    cp.set_outage(Outage::None);
    assert!(lease(&cp, 1, 0, 30).await.is_empty());
    assert_eq!(cp.calls().server_errors(), 2);
}

#[tokio::test]
async fn refuse_closes_the_port_and_recovery_reopens_the_same_url() {
    let cp = Arc::new(start().await);
    let url = cp.url();
    // A long poll in flight when the control plane goes away dies with it.
    let held = {
        let cp = cp.clone();
        tokio::spawn(async move {
            let url = format!("{}/v1/connectors/sandbox/lease", cp.url());
            post(&url, Some(TOKEN))
                .json(&lease_req(1, 30, 30))
                .send()
                .await
        })
    };
    tokio::time::timeout(PROMPT, cp.wait_for_held_polls(1))
        .await
        .expect("held");
    cp.set_outage(Outage::Refuse);
    let cut = tokio::time::timeout(PROMPT, held)
        .await
        .expect("the held poll ends at once")
        .expect("task");
    assert!(cut.is_err(), "cut, not answered: {cut:?}");

    let refused = post(&format!("{url}/v1/connectors/sandbox/lease"), Some(TOKEN))
        .json(&lease_req(1, 0, 30))
        .send()
        .await
        .expect_err("refused");
    assert!(refused.is_connect(), "{refused:?}");
    assert_eq!(cp.outage(), Outage::Refuse);

    cp.set_outage(Outage::None);
    assert_eq!(cp.url(), url, "same URL");
    assert!(lease(&cp, 1, 0, 30).await.is_empty());
}

#[tokio::test]
async fn refuse_also_cuts_a_clients_idle_pooled_connection() {
    let cp = start().await;
    let http = client();
    let url = format!("{}/v1/connectors/sandbox/lease", cp.url());
    let call = || {
        http.post(&url)
            .bearer_auth(TOKEN)
            .json(&lease_req(1, 0, 30))
            .send()
    };
    assert_eq!(call().await.expect("up").status(), StatusCode::OK);
    cp.set_outage(Outage::Refuse);
    // Whether the kept-alive connection is found dead or the request dies on
    // it, the "down" control plane must not answer.
    let down = call().await;
    assert!(down.is_err(), "{down:?}");
    cp.set_outage(Outage::None);
    assert_eq!(call().await.expect("back").status(), StatusCode::OK);
}

#[tokio::test]
async fn instances_sharing_a_connector_id_never_get_the_same_action() {
    let cp = Arc::new(start().await);
    let ids_wanted: Vec<String> = (0..20).map(|i| format!("act-{i}")).collect();
    cp.enqueue_many(ids_wanted.iter().map(|id| action(id)).collect());
    let poll = |instance: &'static str| {
        let cp = cp.clone();
        tokio::spawn(async move {
            let mut body = lease_req(7, 0, 30);
            body["instance_id"] = json!(instance);
            let mut got = Vec::new();
            loop {
                let a = v1(&cp, "lease", &body).await;
                let batch = a.body["actions"].as_array().expect("actions").clone();
                if batch.is_empty() {
                    return got;
                }
                got.extend(ids(&batch).into_iter().map(str::to_owned));
            }
        })
    };
    let (a, b) = (poll("grantbridge-0"), poll("grantbridge-1"));
    let mut all = a.await.expect("a");
    all.extend(b.await.expect("b"));
    all.sort();
    let mut wanted = ids_wanted.clone();
    wanted.sort();
    assert_eq!(all, wanted, "each action exactly once");
}

#[tokio::test]
async fn fail_next_answers_the_given_status_then_recovers() {
    let cp = start().await;
    cp.fail_next(2, 429, Some(7));
    for _ in 0..2 {
        let a = v1(&cp, "lease", &lease_req(1, 0, 30)).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a.headers[RETRY_AFTER], "7");
        assert_eq!(a.body["error"], "too_many_requests");
    }
    assert_eq!(
        v1(&cp, "lease", &lease_req(1, 0, 30)).await.status,
        StatusCode::OK
    );
    cp.fail_next(1, 500, None);
    let a = v1(&cp, "heartbeat", &json!({})).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!a.headers.contains_key(RETRY_AFTER));
    let calls = cp.calls();
    assert_eq!(calls.with_status(429), 2);
    assert_eq!(calls.server_errors(), 1);
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let cp = start().await;
    cp.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    let a = v1_as(&cp, None, "lease", &lease_req(1, 0, 30)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "errors are delayed too");
    assert!(started.elapsed() >= Duration::from_millis(300));
    cp.set_latency(Duration::ZERO);
    let started = Instant::now();
    lease(&cp, 1, 0, 30).await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn wait_for_results_returns_when_enough_have_arrived() {
    let cp = Arc::new(start().await);
    cp.enqueue_many(vec![action("a"), action("b")]);
    let leased = lease(&cp, 2, 0, 30).await;
    let waiter = {
        let cp = cp.clone();
        tokio::spawn(async move { cp.wait_for_results(2, Duration::from_secs(60)).await })
    };
    for l in &leased {
        let id = l["id"].as_str().expect("id");
        let r = result(id, Some(&token_of(l)), "succeeded");
        v1(&cp, "results", &json!({ "results": [r] })).await;
    }
    let got = tokio::time::timeout(PROMPT, waiter)
        .await
        .expect("returned once both arrived")
        .expect("task");
    assert_eq!(got.len(), 2);
    // Not enough: it gives up at the timeout with what there is.
    assert_eq!(
        cp.wait_for_results(3, Duration::from_millis(50))
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn the_admin_api_enqueues_reports_and_switches_knobs() {
    let cp = start().await;
    let http = client();
    let admin = |path: &str| format!("{}/_admin/{path}", cp.url());
    let one = send(http.post(admin("actions")).json(&action("x1"))).await;
    assert_eq!(one.body, json!({"enqueued": ["x1"]}));
    let many = send(
        http.post(admin("actions"))
            .json(&json!([action("x2"), action("x3")])),
    )
    .await;
    assert_eq!(many.body, json!({"enqueued": ["x2", "x3"]}));
    let no_id = send(
        http.post(admin("actions"))
            .json(&json!([{"integration": "i"}])),
    )
    .await;
    assert_eq!(no_id.status, StatusCode::BAD_REQUEST);

    let t = token_of(&lease(&cp, 1, 0, 30).await[0]);
    v1(
        &cp,
        "results",
        &json!({"results": [result("x1", Some(&t), "succeeded")]}),
    )
    .await;
    let state = send(http.get(admin("state"))).await.body;
    assert_eq!(state["pending"], 2);
    assert_eq!(state["leased"], 0);
    assert_eq!(state["results"], 1);
    assert_eq!(state["outage"], "none");
    assert_eq!(state["calls"]["lease"], 1);
    let results = send(http.get(admin("results"))).await.body;
    assert_eq!(results["results"]["x1"]["reports"], 1);
    assert_eq!(results["results"]["x1"]["result"]["outcome"], "succeeded");

    let o = send(
        http.post(admin("outage"))
            .json(&json!({"mode": "unavailable"})),
    )
    .await;
    assert_eq!(o.status, StatusCode::OK);
    assert_eq!(
        v1(&cp, "lease", &lease_req(1, 0, 30)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    send(http.post(admin("outage")).json(&json!({"mode": "none"}))).await;
    let bad = send(http.post(admin("outage")).json(&json!({"mode": "flaky"}))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    send(
        http.post(admin("fail_next"))
            .json(&json!({"count": 1, "status": 503, "retry_after": 2})),
    )
    .await;
    let failed = v1(&cp, "lease", &lease_req(1, 0, 30)).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failed.headers[RETRY_AFTER], "2");

    send(http.post(admin("tokens")).json(&json!({"revoke": TOKEN}))).await;
    assert_eq!(
        v1(&cp, "lease", &lease_req(1, 0, 30)).await.status,
        StatusCode::UNAUTHORIZED
    );
    send(http.post(admin("tokens")).json(&json!({"add": TOKEN}))).await;
    assert_eq!(
        v1(&cp, "lease", &lease_req(1, 0, 30)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_admin_refuse_answers_then_closes_and_a_timed_one_ends_by_itself() {
    let cp = start().await;
    let answer = send(
        client()
            .post(format!("{}/_admin/outage", cp.url()))
            .json(&json!({"mode": "refuse", "seconds": 1})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "the caller hears back");
    assert_eq!(answer.body["mode"], "refuse");
    assert_eq!(cp.outage(), Outage::Refuse);
    let refused = client()
        .get(format!("{}/_admin/state", cp.url()))
        .send()
        .await
        .expect_err("refused");
    assert!(refused.is_connect());
    tokio::time::timeout(PROMPT, cp.wait_for_outage(Outage::None))
        .await
        .expect("ends by itself");
    assert!(lease(&cp, 1, 0, 30).await.is_empty(), "serving again");
}

#[tokio::test]
async fn dropping_it_closes_the_port() {
    let cp = start().await;
    let addr = cp.shared.net.addr();
    drop(cp);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn control_plane_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ControlPlane>();
}

#[test]
fn endpoints_are_told_apart_by_path() {
    assert_eq!(Endpoint::of("/v1/connectors/c/lease"), Endpoint::Lease);
    assert_eq!(
        Endpoint::of("/v1/connectors/c/actions/a-1/extend"),
        Endpoint::Extend
    );
    assert_eq!(Endpoint::of("/v1/connectors/c/results"), Endpoint::Results);
    assert_eq!(
        Endpoint::of("/v1/connectors/c/heartbeat"),
        Endpoint::Heartbeat
    );
    assert_eq!(Endpoint::of("/v1/connectors/c/lease/x"), Endpoint::Other);
    assert_eq!(Endpoint::of("/v1/other"), Endpoint::Other);
}
