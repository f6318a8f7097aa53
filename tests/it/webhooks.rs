//! Push mode with Standard Webhooks signatures, the official libraries as the
//! senders: PyPI `standardwebhooks` and npm `standardwebhooks`, each signing
//! real requests (tests/interop/webhooks): accepted, tampered, stale, rotated,
//! and a `webhook-id` that is not the action id.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use crate::helpers::{RunningDaemon, action, spawn_control_plane, spawn_env};

fn senders() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/webhooks")
}

/// A `whsec_` secret as the libraries make them (24 random bytes, base64).
fn whsec() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>())
    )
}

#[derive(Clone, Copy, Debug)]
enum Sender {
    Python,
    Node,
}

impl Sender {
    /// Sends `body` as message `id`; the answer's status and JSON body.
    async fn send(
        self,
        url: &str,
        secret: &str,
        id: &str,
        body: &Value,
        flags: &[&str],
    ) -> (u16, Value) {
        let mut cmd = match self {
            Self::Python => {
                let mut c = tokio::process::Command::new("python3");
                c.arg(senders().join("send.py"));
                c
            }
            Self::Node => {
                let modules = senders().join("node_modules/standardwebhooks");
                assert!(
                    modules.exists(),
                    "{} is missing: run `npm ci --prefix tests/interop/webhooks` first (.ci/run does)",
                    modules.display()
                );
                let mut c = tokio::process::Command::new("node");
                c.arg(senders().join("send.mjs"));
                c
            }
        };
        let out = cmd
            .args([url, secret, id, &body.to_string()])
            .args(flags)
            .output()
            .await
            .expect("the sender runs");
        assert!(
            out.status.success(),
            "{self:?} sender failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        (
            line["status"].as_u64().unwrap() as u16,
            line["body"].clone(),
        )
    }
}

async fn story(sender: Sender) {
    let env = spawn_env().await;
    env.deploy("grant-db");
    let cp = spawn_control_plane().await;
    let current = whsec();
    let retired = whsec();
    let secret_file = env.dir.path().join("whsec");
    std::fs::write(&secret_file, &current).unwrap();
    let config = env
        .with_push(env.daemon_config(&cp, &[("orders-db", "grant-db")]))
        .set("control_plane.poll", false)
        .set(
            "push.secret_files",
            vec![
                env.dir.path().join("push-secret").display().to_string(),
                secret_file.display().to_string(),
            ],
        );
    let daemon = RunningDaemon::start(&env, &config).await;
    let url = format!("http://{}/v1/actions?wait=20", daemon.push_addr.unwrap());
    let tag = format!("{sender:?}").to_lowercase();

    let ok = action(&format!("{tag}-ok"), "orders-db");
    let (status, body) = sender
        .send(&url, &current, &format!("{tag}-ok"), &ok, &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "succeeded");
    assert_eq!(env.sandbox.invocations("grant-db").len(), 1);

    let t = format!("{tag}-tampered");
    let (status, _) = sender
        .send(&url, &current, &t, &action(&t, "orders-db"), &["--tamper"])
        .await;
    assert_eq!(status, 401, "a body changed after signing");

    let s = format!("{tag}-stale");
    let (status, body) = sender
        .send(&url, &current, &s, &action(&s, "orders-db"), &["--stale"])
        .await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("300 s"),
        "{body}"
    );

    let r = format!("{tag}-rotated");
    let (status, _) = sender
        .send(
            &url,
            &retired,
            &r,
            &action(&r, "orders-db"),
            &["--also-sign-with", &current],
        )
        .await;
    assert_eq!(status, 200, "one of two signatures is the current secret's");
    let (status, _) = sender
        .send(
            &url,
            &retired,
            &format!("{tag}-retired"),
            &action(&format!("{tag}-retired"), "orders-db"),
            &[],
        )
        .await;
    assert_eq!(status, 401, "only the retired secret");

    let (status, body) = sender
        .send(
            &url,
            &current,
            &format!("{tag}-other-id"),
            &action(&format!("{tag}-x"), "orders-db"),
            &[],
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("webhook-id"),
        "{body}"
    );

    // Results reach the control plane like any pushed action's.
    let results = cp
        .wait_for_results(2, std::time::Duration::from_secs(60))
        .await;
    assert!(results[&format!("{tag}-ok")].pushed);
    assert_eq!(
        env.sandbox.invocations("grant-db").len(),
        2,
        "only the accepted and the rotated ones ran"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn the_python_library_signs_what_the_connector_accepts() {
    story(Sender::Python).await;
}

#[tokio::test]
async fn the_node_library_signs_what_the_connector_accepts() {
    story(Sender::Node).await;
}
