//! Unit tests of the verdict logic: findings from a function's description,
//! statuses, one-line details and the rendered text. The API calls themselves
//! are tested against the sandbox in tests/it/online.rs.

use std::time::Duration;

use url::Url;

use super::*;

const URL: &str = "https://us-central1-acme-prod.cloudfunctions.net/grant-db";

fn integration() -> Integration {
    Integration {
        name: "orders-db".into(),
        connection: "prod".into(),
        project_id: "acme-prod".into(),
        region: "us-central1".into(),
        function: "grant-db".into(),
        generation: None,
        url: Url::parse(URL).unwrap(),
        audience: URL.into(),
        custom_parameters: Default::default(),
        access_details: None,
        timeout: Duration::from_secs(60),
        max_attempts: 5,
    }
}

fn function() -> CloudFunction {
    CloudFunction {
        name: FunctionName::new("acme-prod", "us-central1", "grant-db"),
        state: FunctionState::Active,
        generation: Generation::Gen1,
        url: Some(URL.into()),
        service_uri: Some(URL.into()),
        service: None,
        event_type: None,
        timeout: Some(Duration::from_secs(60)),
        ingress: Ingress::AllowAll,
        runtime: Some("python312".into()),
        entry_point: Some("handler".into()),
        available_memory: Some("256M".into()),
        service_account_email: None,
        update_time: None,
        state_messages: Vec::new(),
    }
}

const RUN: &str = "https://grant-db-abc123-uc.a.run.app";

fn gen2() -> CloudFunction {
    CloudFunction {
        generation: Generation::Gen2,
        service_uri: Some(RUN.into()),
        service: ServiceName::parse("projects/acme-prod/locations/us-central1/services/grant-db"),
        ..function()
    }
}

fn verdict(i: &Integration, f: &CloudFunction) -> (Verdict, ()) {
    let mut v = Verdict::new(i);
    check_function(&mut v, i, f);
    (v, ())
}

fn codes(v: &Verdict) -> Vec<&'static str> {
    v.findings.iter().map(|f| f.code).collect()
}

#[test]
fn a_healthy_function_is_ok_and_reports_timeout_and_ingress() {
    let (v, _) = verdict(&integration(), &function());
    assert_eq!(v.status, Health::Ok);
    assert_eq!(codes(&v), ["timeout", "ingress"]);
    assert!(v.finding("ingress").unwrap().message.contains("ALLOW_ALL"));
    assert_eq!(v.status.as_str(), "ok");
    assert!(v.detail().starts_with("ok"), "{}", v.detail());
}

#[test]
fn status_other_than_active_is_an_error_and_deploying_a_warning() {
    let mut f = function();
    f.state = FunctionState::Failed;
    f.state_messages = vec!["Function failed on loading user code.".into()];
    let (v, _) = verdict(&integration(), &f);
    assert_eq!(v.status, Health::Error);
    let m = &v.finding("not_active").unwrap().message;
    assert!(
        m.contains("FAILED")
            && m.contains("failed on loading user code")
            && m.contains(
                "gcloud functions describe grant-db --project=acme-prod --region=us-central1"
            ),
        "{m}"
    );
    assert_eq!(v.status.as_str(), "error");
    assert!(
        v.detail()
            .starts_with("1 error(s), 0 warning(s): the function is FAILED")
    );

    f.state = FunctionState::Deploying;
    let (v, _) = verdict(&integration(), &f);
    assert_eq!(v.status, Health::Degraded);
    assert_eq!(v.status.as_str(), "degraded");
}

/// A 2nd gen function answers at its run.app URL and its cloudfunctions.net
/// URL; at either, its tokens must carry the run.app URL as audience.
#[test]
fn second_gen_is_checked_at_either_url_for_its_run_audience() {
    // The default (cloudfunctions.net) URL with its own audience: warned.
    let (v, _) = verdict(&integration(), &gen2());
    assert_eq!(v.status, Health::Degraded);
    let m = &v.finding("audience_mismatch").unwrap().message;
    assert!(m.contains(&format!("audience = \"{RUN}\"")), "{m}");
    assert!(
        v.finding("gen2")
            .unwrap()
            .message
            .contains("generation = 2")
    );

    let mut i = integration();
    i.audience = RUN.into();
    assert_eq!(verdict(&i, &gen2()).0.status, Health::Ok);
    i.url = Url::parse(RUN).unwrap();
    i.generation = Some(Generation::Gen2);
    let (v, _) = verdict(&i, &gen2());
    assert_eq!(v.status, Health::Ok, "{:?}", v.findings);
    assert!(!v.finding("gen2").unwrap().message.contains("declare"));

    i.url = Url::parse("https://grant-db-other-uc.a.run.app").unwrap();
    let m = verdict(&i, &gen2())
        .0
        .finding("url_mismatch")
        .unwrap()
        .message
        .clone();
    assert!(m.contains(&format!("url = \"{RUN}\"")), "{m}");

    // Declared one generation, deployed as the other.
    let mut i = integration();
    i.generation = Some(Generation::Gen1);
    let m = verdict(&i, &gen2())
        .0
        .finding("generation_mismatch")
        .unwrap()
        .message
        .clone();
    assert!(m.contains("set generation = 2"), "{m}");
    i.generation = Some(Generation::Gen2);
    assert!(
        verdict(&i, &function())
            .0
            .finding("generation_mismatch")
            .is_some()
    );
}

#[test]
fn trigger_url_and_audience_must_match() {
    let mut f = function();
    f.url = None;
    f.event_type = Some("google.pubsub.topic.publish".into());
    let (v, _) = verdict(&integration(), &f);
    let m = &v.finding("no_https_trigger").unwrap().message;
    assert!(
        m.contains("google.pubsub.topic.publish") && m.contains("--trigger-http"),
        "{m}"
    );

    let mut i = integration();
    i.url = Url::parse("https://us-central1-acme-prod.cloudfunctions.net/grant-db-old").unwrap();
    let (v, _) = verdict(&i, &function());
    assert_eq!(v.status, Health::Error);
    assert!(
        v.finding("url_mismatch")
            .unwrap()
            .message
            .contains(&format!("url = \"{URL}\""))
    );

    // A trailing slash is the same URL.
    let mut i = integration();
    i.url = Url::parse(&format!("{URL}/")).unwrap();
    i.audience = format!("{URL}/");
    assert_eq!(verdict(&i, &function()).0.status, Health::Ok);

    let mut i = integration();
    i.audience = "https://example.com".into();
    let (v, _) = verdict(&i, &function());
    assert_eq!(codes(&v)[0], "audience_mismatch");
}

#[test]
fn timeouts_warn_both_ways() {
    let mut f = function();
    f.timeout = Some(Duration::from_secs(540));
    let (v, _) = verdict(&integration(), &f);
    assert_eq!(v.status, Health::Degraded);
    let m = &v.finding("timeout_shorter").unwrap().message;
    assert!(
        m.contains("execute twice") && m.contains("timeout = \"550s\""),
        "{m}"
    );

    let mut i = integration();
    i.timeout = Duration::from_secs(300);
    let (v, _) = verdict(&i, &function());
    let m = &v.finding("timeout_longer").unwrap().message;
    assert!(
        m.contains("waits for nothing") && m.contains("timeout = \"70s\""),
        "{m}"
    );

    // Within the slack: fine.
    i.timeout = Duration::from_secs(60) + TIMEOUT_SLACK;
    assert_eq!(verdict(&i, &function()).0.status, Health::Ok);
    // Not reported: Google's default, 60s.
    let mut f = function();
    f.timeout = None;
    assert_eq!(verdict(&integration(), &f).0.status, Health::Ok);
}

#[test]
fn internal_ingress_is_reported_with_what_it_needs() {
    let mut f = function();
    f.ingress = Ingress::AllowInternalOnly;
    let (v, _) = verdict(&integration(), &f);
    assert_eq!(v.status, Health::Ok);
    assert!(v.finding("ingress").unwrap().message.contains("VPC"));
}

#[test]
fn detail_is_one_bounded_line_naming_the_worst_finding() {
    let mut v = Verdict::new(&integration());
    v.warning("w", "a warning".into());
    v.error("e", "x".repeat(1000));
    v.info("i", "info".into());
    assert_eq!(v.status, Health::Error);
    let d = v.detail();
    assert!(d.starts_with("1 error(s), 1 warning(s): xxx"), "{d}");
    assert!(!d.contains('\n'));
    assert!(d.chars().count() <= 401);
}

#[test]
fn verdicts_render_as_blocks_with_a_summary() {
    let ok = verdict(&integration(), &function()).0;
    let mut bad = Verdict::new(&integration());
    bad.integration = "hr".into();
    bad.error("not_found", "function x does not exist".into());
    let mut public = Verdict::new(&integration());
    public.integration = "crm".into();
    public.warning("public_invoker", "PUBLIC FUNCTION: allUsers".into());
    let text = render_verdicts(&[ok, bad, public]);
    assert!(text.contains("  ok       orders-db"), "{text}");
    assert!(text.contains("  ERROR    hr"), "{text}");
    assert!(
        text.contains("x ERROR   function x does not exist"),
        "{text}"
    );
    assert!(text.contains("! WARNING PUBLIC FUNCTION"), "{text}");
    assert!(
        text.ends_with("online: 1 ok, 1 with warnings, 1 failed\n"),
        "{text}"
    );
}

#[test]
fn functions_render_as_a_table() {
    let mut g = function();
    g.name = FunctionName::new("acme-prod", "europe-west1", "sync");
    g.url = None;
    g.event_type = Some("google.pubsub.topic.publish".into());
    g.generation = Generation::Gen2;
    let text = render_functions(&[function(), g, gen2()]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines[0].starts_with("NAME      REGION        STATE   GEN  URL"),
        "{text}"
    );
    assert!(lines[3].contains(RUN) && lines[3].contains("2nd"), "{text}");
    assert!(
        lines[1].contains(URL)
            && lines[1].contains("python312")
            && lines[1].contains("60s")
            && lines[1].ends_with("ALLOW_ALL"),
        "{text}"
    );
    assert!(
        lines[2].contains("(event: google.pubsub.topic.publish)") && lines[2].contains("2nd"),
        "{text}"
    );
}

#[test]
fn projects_come_from_the_integrations_or_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sa.json"),
        crate::google::key::tests::key_json(
            &crate::google::key::tests::test_pem(),
            "https://oauth2.googleapis.com/token",
        ),
    )
    .unwrap();
    let path = dir.path().join("g.toml");
    let toml = "connector_id = \"c\"\n[connections.prod]\ncredentials = \"service_account_key\"\nkey_file = \"sa.json\"\n[connections.other]\ncredentials = \"metadata\"\n[integrations.a]\nconnection = \"prod\"\nproject_id = \"proj-b\"\nfunction = \"f\"\n[integrations.b]\nconnection = \"prod\"\nproject_id = \"proj-a\"\nfunction = \"g\"\n[integrations.c]\nconnection = \"prod\"\nproject_id = \"proj-a\"\nfunction = \"h\"\n";
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path, &crate::env::MapEnv::new()).unwrap();
    assert_eq!(
        projects_for_connection(&config, "prod"),
        ["proj-a", "proj-b"]
    );
    assert!(projects_for_connection(&config, "other").is_empty());

    let toml = "connector_id = \"c\"\n[connections.prod]\ncredentials = \"service_account_key\"\nkey_file = \"sa.json\"\n";
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path, &crate::env::MapEnv::new()).unwrap();
    assert_eq!(
        projects_for_connection(&config, "prod"),
        ["acme-prod"],
        "the key file's project_id"
    );
}
