//! The control plane's book of actions, leases and results (docs/protocol.md §3
//! lease semantics), as plain data: every operation takes "now" as an
//! argument, so lease expiry is tested without sockets or sleeping.
//!
//! It must not do I/O, read a clock, or wait; the HTTP layer owns the lock
//! around it, the clock, and the long poll.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::protocol::{ReportedResult, is_protocol_id, rfc3339};

/// The first accepted result of an action, and how often it was reported.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRecord {
    /// The first accepted report, exactly as sent (including any `lease_token`).
    pub result: Value,
    /// The same report, parsed (every accepted report parses as a §2 Result).
    pub parsed: ReportedResult,
    /// How many times the action was reported; 1 means no duplicates.
    pub reports: u32,
    /// When the first report was accepted, by the control plane's clock.
    pub accepted_at: SystemTime,
    /// The reporting connector instance (`instance_id` of the first report).
    pub instance_id: Option<String>,
    /// The lease token the first report carried (`None`: reported without one).
    pub lease_token: Option<String>,
    /// The action was never enqueued here: the connector got it by push
    /// (docs/protocol.md §4) and reported it without a lease token.
    pub pushed: bool,
    /// When it was first leased (`None`: pushed), by the control plane's clock.
    pub first_leased_at: Option<SystemTime>,
}

/// Why a result in a `/results` batch was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The `action_id` as sent (null when missing or not a string).
    pub(crate) action_id: Value,
    pub(crate) reason: String,
}

/// What `/extend` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Extend {
    Extended(SystemTime),
    UnknownAction,
    /// Not the current lease, expired, or the action already has a result.
    LeaseLost(&'static str),
}

/// One leased action as the `/lease` answer carries it.
pub(crate) type Leased = Value;

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// As enqueued; sent as is (plus `lease`).
    action: Value,
    /// The current (most recent) lease.
    lease: Option<Lease>,
    /// Every lease token ever issued for this action.
    tokens: Vec<String>,
    result: Option<ResultRecord>,
    /// When the first lease was handed out.
    first_leased_at: Option<SystemTime>,
}

#[derive(Debug, Clone)]
struct Lease {
    token: String,
    expires_at: SystemTime,
}

/// Actions by id, with two indexes so a lease call does not scan everything:
/// `ready` (available, oldest first) and `leased` (outstanding, by expiry).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    next_seq: u64,
    entries: HashMap<String, Entry>,
    /// seq → id of actions that may be handed out (never leased, or whose
    /// lease expired without a result, once [`Ledger::expire`] has run).
    ready: BTreeMap<u64, String>,
    /// (expires_at, seq) of actions under a lease and without a result.
    leased: BTreeSet<(SystemTime, u64)>,
    /// seq → id for the `leased` index.
    by_seq: HashMap<u64, String>,
    /// Results of actions that were never enqueued (push mode), by id.
    pushed: HashMap<String, ResultRecord>,
    /// Distinct actions with a result (kept, not counted: waiters ask often).
    with_result: usize,
}

/// `t` rounded up to a whole second, so the RFC 3339 `expires_at` on the wire
/// (second precision) is exactly the instant the lease ends.
fn ceil_to_second(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

impl Ledger {
    /// Adds an action (a JSON object with a string `id`). An id that is
    /// already known is left as it is (ids are unique; the first stands).
    /// Returns whether it was added.
    pub(crate) fn enqueue(&mut self, id: String, action: Value) -> bool {
        if self.entries.contains_key(&id) || self.pushed.contains_key(&id) {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready.insert(seq, id.clone());
        self.by_seq.insert(seq, id.clone());
        self.entries.insert(
            id,
            Entry {
                seq,
                action,
                lease: None,
                tokens: Vec::new(),
                result: None,
                first_leased_at: None,
            },
        );
        true
    }

    /// Moves actions whose lease ended at or before `now` (without a
    /// result) back to `ready`.
    fn expire(&mut self, now: SystemTime) {
        while let Some(&(expires_at, seq)) = self.leased.first() {
            if expires_at > now {
                break;
            }
            self.leased.pop_first();
            if let Some(id) = self.by_seq.get(&seq) {
                self.ready.insert(seq, id.clone());
            }
        }
    }

    /// Leases up to `max` available actions, oldest first, each with a new
    /// token `token()` valid for `lease` from `now`.
    pub(crate) fn lease(
        &mut self,
        now: SystemTime,
        max: usize,
        lease: Duration,
        mut token: impl FnMut() -> String,
    ) -> Vec<Leased> {
        self.expire(now);
        let expires_at = ceil_to_second(now + lease);
        let mut out = Vec::new();
        while out.len() < max {
            let Some((seq, id)) = self.ready.pop_first() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            let token = token();
            entry.tokens.push(token.clone());
            entry.first_leased_at.get_or_insert(now);
            entry.lease = Some(Lease {
                token: token.clone(),
                expires_at,
            });
            self.leased.insert((expires_at, seq));
            let mut action = match &entry.action {
                Value::Object(m) => m.clone(),
                other => {
                    let mut m = Map::new();
                    m.insert("action".into(), other.clone());
                    m
                }
            };
            action.insert(
                "lease".into(),
                json!({"token": token, "expires_at": rfc3339(expires_at)}),
            );
            out.push(Value::Object(action));
        }
        out
    }

    /// When the earliest outstanding lease ends (a held long poll wakes then).
    pub(crate) fn next_expiry(&self) -> Option<SystemTime> {
        self.leased.first().map(|(t, _)| *t)
    }

    /// Extends the lease `token` of `id` to `now + lease`, if it is still the
    /// live lease of an action without a result.
    pub(crate) fn extend(
        &mut self,
        now: SystemTime,
        id: &str,
        token: &str,
        lease: Duration,
    ) -> Extend {
        let Some(entry) = self.entries.get_mut(id) else {
            return Extend::UnknownAction;
        };
        if entry.result.is_some() {
            return Extend::LeaseLost("the action already has a result");
        }
        let Some(current) = entry.lease.as_mut() else {
            return Extend::LeaseLost("the action is not leased");
        };
        if current.token != token {
            return Extend::LeaseLost("the lease token is not the action's current lease");
        }
        if current.expires_at <= now {
            return Extend::LeaseLost("the lease expired");
        }
        let expires_at = ceil_to_second(now + lease);
        self.leased.remove(&(current.expires_at, entry.seq));
        self.leased.insert((expires_at, entry.seq));
        current.expires_at = expires_at;
        Extend::Extended(expires_at)
    }

    /// Records one reported result. Accepted: `Ok(id)`.
    pub(crate) fn report(&mut self, now: SystemTime, report: &Value) -> Result<String, Rejection> {
        let reject = |reason: String| Rejection {
            action_id: report.get("action_id").cloned().unwrap_or(Value::Null),
            reason,
        };
        let Some(obj) = report.as_object() else {
            return Err(reject("a result must be a JSON object".into()));
        };
        let id = match obj.get("action_id") {
            Some(Value::String(s)) if is_protocol_id(s) => s.clone(),
            _ => {
                return Err(reject(
                    "`action_id` must be 1-128 characters of [A-Za-z0-9._:-]".into(),
                ));
            }
        };
        let lease_token = match obj.get("lease_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(reject("`lease_token` must be a string".into())),
        };
        let parsed: ReportedResult = serde_json::from_value(report.clone())
            .map_err(|e| reject(format!("malformed result: {e}")))?;
        if let Some(reason) = parsed.inconsistency() {
            return Err(reject(format!("malformed result: {reason}")));
        }
        let record = |pushed: bool| ResultRecord {
            result: report.clone(),
            instance_id: Some(parsed.instance_id.clone()),
            parsed: parsed.clone(),
            reports: 1,
            accepted_at: now,
            lease_token: lease_token.clone(),
            pushed,
            first_leased_at: None,
        };
        let Some(entry) = self.entries.get_mut(&id) else {
            if let Some(existing) = self.pushed.get_mut(&id) {
                existing.reports += 1;
                return Ok(id);
            }
            if lease_token.is_some() {
                return Err(reject("unknown action".into()));
            }
            self.pushed.insert(id.clone(), record(true));
            self.with_result += 1;
            return Ok(id);
        };
        if let Some(existing) = entry.result.as_mut() {
            existing.reports += 1;
            return Ok(id);
        }
        if let Some(token) = &lease_token
            && !entry.tokens.contains(token)
        {
            return Err(reject("lease token does not match".into()));
        }
        entry.result = Some(ResultRecord {
            first_leased_at: entry.first_leased_at,
            ..record(false)
        });
        self.with_result += 1;
        self.ready.remove(&entry.seq);
        if let Some(lease) = &entry.lease {
            self.leased.remove(&(lease.expires_at, entry.seq));
        }
        Ok(id)
    }

    pub(crate) fn result(&self, id: &str) -> Option<ResultRecord> {
        self.entries
            .get(id)
            .and_then(|e| e.result.clone())
            .or_else(|| self.pushed.get(id).cloned())
    }

    pub(crate) fn results(&self) -> HashMap<String, ResultRecord> {
        self.entries
            .iter()
            .filter_map(|(id, e)| e.result.clone().map(|r| (id.clone(), r)))
            .chain(self.pushed.iter().map(|(id, r)| (id.clone(), r.clone())))
            .collect()
    }

    /// How many distinct actions have a result (enqueued or pushed).
    pub(crate) fn result_count(&self) -> usize {
        self.with_result
    }

    pub(crate) fn leases_issued(&self, id: &str) -> u32 {
        self.entries
            .get(id)
            .map_or(0, |e| u32::try_from(e.tokens.len()).unwrap_or(u32::MAX))
    }

    /// Enqueued actions without a result.
    pub(crate) fn pending(&self) -> usize {
        self.ready.len() + self.leased.len()
    }

    /// Enqueued actions under a lease that has not ended at `now`.
    pub(crate) fn leased(&self, now: SystemTime) -> usize {
        self.leased.iter().filter(|(t, _)| *t > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_rfc3339;
    use proptest::prelude::*;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("tok-{n}")
        }
    }

    fn action(id: &str) -> Value {
        json!({"id": id, "integration": "orders-db", "event_type": "grant-access", "params": {}})
    }

    pub(crate) fn result(id: &str, token: Option<&str>) -> Value {
        let mut r = json!({"action_id": id, "outcome": "succeeded", "error": null,
            "function": {"url": "http://f", "status": 200, "body": {"status": "ok"}, "latency_ms": 3},
            "attempts": 1, "started_at": "2027-01-15T08:00:00Z", "finished_at": "2027-01-15T08:00:01Z",
            "instance_id": "i-1", "connector_version": "0.1.0"});
        if let Some(t) = token {
            r["lease_token"] = json!(t);
        }
        r
    }

    fn ids(leased: &[Value]) -> Vec<&str> {
        leased.iter().filter_map(|a| a["id"].as_str()).collect()
    }

    #[test]
    fn leases_oldest_first_and_not_again_until_expiry() {
        let mut l = Ledger::default();
        let mut tok = counter();
        for id in ["a", "b", "c"] {
            assert!(l.enqueue(id.into(), action(id)));
        }
        assert!(!l.enqueue("a".into(), action("a")), "ids are unique");
        let first = l.lease(t0(), 2, secs(30), &mut tok);
        assert_eq!(ids(&first), ["a", "b"]);
        assert_eq!(first[0]["lease"]["token"], "tok-1");
        assert_eq!(first[0]["lease"]["expires_at"], rfc3339(t0() + secs(30)));
        assert_eq!(
            first[0]["integration"], "orders-db",
            "the action is sent as is"
        );
        assert_eq!(ids(&l.lease(t0(), 10, secs(30), &mut tok)), ["c"]);
        assert!(l.lease(t0() + secs(29), 10, secs(30), &mut tok).is_empty());
        assert_eq!(l.next_expiry(), Some(t0() + secs(30)));
        let again = l.lease(t0() + secs(30), 10, secs(30), &mut tok);
        assert_eq!(ids(&again), ["a", "b", "c"], "redelivered, oldest first");
        assert_eq!(l.leases_issued("a"), 2);
        assert_eq!(l.pending(), 3);
        assert_eq!(l.leased(t0() + secs(30)), 3);
    }

    #[test]
    fn expiry_is_rounded_up_to_the_second_on_the_wire() {
        let mut l = Ledger::default();
        l.enqueue("a".into(), action("a"));
        let now = t0() + Duration::from_millis(400);
        let leased = l.lease(now, 1, secs(1), counter());
        assert_eq!(leased[0]["lease"]["expires_at"], rfc3339(t0() + secs(2)));
        assert_eq!(l.next_expiry(), Some(t0() + secs(2)));
        let early = t0() + Duration::from_millis(1999);
        assert!(l.lease(early, 1, secs(1), counter()).is_empty());
        assert_eq!(l.lease(t0() + secs(2), 1, secs(1), counter()).len(), 1);
    }

    #[test]
    fn extend_only_the_live_current_lease() {
        let mut l = Ledger::default();
        let mut tok = counter();
        l.enqueue("a".into(), action("a"));
        l.lease(t0(), 1, secs(10), &mut tok);
        assert_eq!(
            l.extend(t0() + secs(5), "a", "tok-1", secs(10)),
            Extend::Extended(t0() + secs(15))
        );
        assert!(l.lease(t0() + secs(12), 1, secs(10), &mut tok).is_empty());
        assert!(matches!(
            l.extend(t0(), "a", "nope", secs(10)),
            Extend::LeaseLost(_)
        ));
        assert_eq!(
            l.extend(t0(), "zz", "tok-1", secs(10)),
            Extend::UnknownAction
        );
        assert_eq!(
            l.extend(t0() + secs(15), "a", "tok-1", secs(10)),
            Extend::LeaseLost("the lease expired")
        );
        l.lease(t0() + secs(15), 1, secs(10), &mut tok);
        assert!(matches!(
            l.extend(t0() + secs(16), "a", "tok-1", secs(10)),
            Extend::LeaseLost(_)
        ));
        l.report(t0() + secs(16), &result("a", Some("tok-2")))
            .expect("accepted");
        assert_eq!(
            l.extend(t0() + secs(16), "a", "tok-2", secs(10)),
            Extend::LeaseLost("the action already has a result")
        );
    }

    #[test]
    fn first_result_stands_and_duplicates_are_counted() {
        let mut l = Ledger::default();
        l.enqueue("a".into(), action("a"));
        l.lease(t0(), 1, secs(10), counter());
        assert_eq!(
            l.report(t0(), &result("a", Some("tok-1"))),
            Ok("a".to_owned())
        );
        let mut second = result("a", Some("tok-1"));
        second["outcome"] = json!("failed");
        second["error"] = json!({"code": "internal", "message": "x", "retryable": false});
        assert_eq!(l.report(t0() + secs(1), &second), Ok("a".to_owned()));
        let r = l.result("a").expect("result");
        assert_eq!(r.reports, 2);
        assert_eq!(r.result["outcome"], "succeeded");
        assert_eq!(r.accepted_at, t0());
        assert_eq!(r.instance_id.as_deref(), Some("i-1"));
        assert!(!r.pushed);
        assert_eq!(l.pending(), 0);
        assert!(l.lease(t0() + secs(60), 1, secs(10), counter()).is_empty());
    }

    #[test]
    fn late_result_from_an_expired_lease_is_the_truth() {
        let mut l = Ledger::default();
        let mut tok = counter();
        l.enqueue("a".into(), action("a"));
        l.lease(t0(), 1, secs(10), &mut tok);
        l.lease(t0() + secs(10), 1, secs(10), &mut tok);
        assert_eq!(
            l.report(t0() + secs(11), &result("a", Some("tok-1"))),
            Ok("a".into())
        );
        assert_eq!(
            l.result("a").expect("r").lease_token.as_deref(),
            Some("tok-1")
        );
    }

    #[test]
    fn rejections_name_their_reason() {
        let mut l = Ledger::default();
        l.enqueue("a".into(), action("a"));
        l.lease(t0(), 1, secs(10), counter());
        let reason = |l: &mut Ledger, v: Value| l.report(t0(), &v).expect_err("rejected").reason;
        assert_eq!(
            reason(&mut l, result("a", Some("forged"))),
            "lease token does not match"
        );
        assert_eq!(reason(&mut l, result("b", Some("tok-1"))), "unknown action");
        assert!(reason(&mut l, json!("x")).contains("object"));
        assert!(reason(&mut l, json!({"action_id": "a b"})).contains("action_id"));
        assert!(
            reason(&mut l, json!({"action_id": "a", "lease_token": 3})).contains("lease_token")
        );
        assert!(
            reason(&mut l, json!({"action_id": "a", "lease_token": "tok-1"})).contains("malformed")
        );
        let mut bad = result("a", Some("tok-1"));
        bad["outcome"] = json!("failed");
        assert!(reason(&mut l, bad).contains("error"));
        let rej = l.report(t0(), &json!({"oops": 1})).expect_err("rejected");
        assert_eq!(rej.action_id, Value::Null);
        assert!(l.result("a").is_none());
    }

    #[test]
    fn results_without_a_lease_token_are_pushed_actions() {
        let mut l = Ledger::default();
        assert_eq!(l.report(t0(), &result("p1", None)), Ok("p1".into()));
        assert_eq!(l.report(t0(), &result("p1", None)), Ok("p1".into()));
        let r = l.result("p1").expect("recorded");
        assert!(r.pushed);
        assert_eq!(r.reports, 2);
        assert_eq!(l.result_count(), 1);
        assert_eq!(l.pending(), 0);
        assert!(!l.enqueue("p1".into(), action("p1")));
        l.enqueue("a".into(), action("a"));
        assert_eq!(l.report(t0(), &result("a", None)), Ok("a".into()));
        assert!(!l.result("a").expect("r").pushed, "known action");
        assert_eq!(l.results().len(), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue,
        Lease {
            max: usize,
            secs: u64,
        },
        Advance {
            millis: u64,
        },
        /// Report with the `n`th token ever issued (or a forged one).
        Report {
            n: usize,
            forged: bool,
        },
        /// Extend with the `n`th token ever issued.
        Extend {
            n: usize,
            secs: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Enqueue),
            (1usize..4, 1u64..5).prop_map(|(max, secs)| Op::Lease { max, secs }),
            (0u64..4000).prop_map(|millis| Op::Advance { millis }),
            (0usize..64, any::<bool>()).prop_map(|(n, forged)| Op::Report { n, forged }),
            (0usize..64, 1u64..5).prop_map(|(n, secs)| Op::Extend { n, secs }),
        ]
    }

    proptest! {
        /// Whatever the connector does, in whatever order: an action is never
        /// handed out while its latest lease is live or once it has a result,
        /// and every action without a result comes back in the end.
        #[test]
        fn leases_never_overlap_and_nothing_is_lost(ops in proptest::collection::vec(op(), 1..80)) {
            let mut l = Ledger::default();
            let mut now = t0();
            let mut enqueued = 0usize;
            let mut issued: Vec<(String, String)> = Vec::new(); // (id, token)
            let mut live_until: HashMap<String, SystemTime> = HashMap::new();
            let mut done: BTreeSet<String> = BTreeSet::new();
            let mut tok = counter();
            for op in ops {
                match op {
                    Op::Enqueue => {
                        l.enqueue(format!("a{enqueued}"), action(&format!("a{enqueued}")));
                        enqueued += 1;
                    }
                    Op::Lease { max, secs } => {
                        let out = l.lease(now, max, Duration::from_secs(secs), &mut tok);
                        prop_assert!(out.len() <= max);
                        for a in out {
                            let id = a["id"].as_str().expect("id").to_owned();
                            prop_assert!(!done.contains(&id), "{} handed out after its result", id);
                            if let Some(until) = live_until.get(&id) {
                                prop_assert!(*until <= now, "{} handed out during a live lease", id);
                            }
                            let expires = parse_rfc3339(a["lease"]["expires_at"].as_str().expect("exp")).expect("rfc3339");
                            prop_assert!(expires >= now + Duration::from_secs(secs));
                            live_until.insert(id.clone(), expires);
                            issued.push((id, a["lease"]["token"].as_str().expect("token").to_owned()));
                        }
                    }
                    Op::Advance { millis } => now += Duration::from_millis(millis),
                    Op::Report { n, forged } => {
                        let Some((id, token)) = issued.get(n).cloned() else { continue };
                        let token = if forged { "forged".to_owned() } else { token };
                        let accepted = l.report(now, &result(&id, Some(&token))).is_ok();
                        prop_assert_eq!(accepted, !forged || done.contains(&id));
                        if accepted {
                            done.insert(id);
                        }
                    }
                    Op::Extend { n, secs } => {
                        let Some((id, token)) = issued.get(n).cloned() else { continue };
                        let latest = issued.iter().rev().find(|(i, _)| *i == id).map(|(_, t)| t.clone());
                        let live = live_until.get(&id).is_some_and(|t| *t > now);
                        match l.extend(now, &id, &token, Duration::from_secs(secs)) {
                            Extend::Extended(t) => {
                                prop_assert!(live && latest.as_deref() == Some(token.as_str()) && !done.contains(&id));
                                live_until.insert(id, t);
                            }
                            Extend::LeaseLost(_) => {
                                prop_assert!(!live || latest.as_deref() != Some(token.as_str()) || done.contains(&id));
                            }
                            Extend::UnknownAction => prop_assert!(false, "{} is known", id),
                        }
                    }
                }
                prop_assert_eq!(l.pending(), enqueued - done.len());
                prop_assert_eq!(l.result_count(), done.len());
            }
            let later = now + Duration::from_secs(3600);
            let rest = l.lease(later, usize::MAX, secs(1), &mut tok);
            prop_assert_eq!(rest.len(), enqueued - done.len());
        }
    }
}
