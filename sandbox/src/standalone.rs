//! `grantbridge sandbox`: run the sandbox as a process for people developing
//! functions or trying grantbridge locally. Creates a service account and key
//! file, deploys functions (sample or proxied to a local server), writes a
//! ready-to-use `grantbridge.toml`, prints the URLs, and serves until shutdown.
//!
//! It writes only into the directory it is given and must not read the process
//! environment (the CLI passes everything in).

use std::future::Future;
use std::path::{Path, PathBuf};

use url::Url;

use crate::daemon_config::{DaemonConfig, Integration};
use crate::{
    ControlPlane, ControlPlaneOptions, FunctionImpl, Sandbox, SandboxError, SandboxOptions, keys,
};

/// What `grantbridge sandbox` was asked for.
#[derive(Debug, Clone)]
pub struct StandaloneArgs {
    /// Where `sa-key.json` and `grantbridge.toml` are written.
    pub dir: PathBuf,
    /// The service account grantbridge runs as.
    pub service_account: String,
    /// Functions to deploy: name → upstream to proxy to (`None`: the sample function).
    /// Empty: one sample function, `grant-sample`.
    pub functions: Vec<(String, Option<Url>)>,
}

impl Default for StandaloneArgs {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("."),
            service_account: "grantbridge@sandbox-project.iam.gserviceaccount.com".to_owned(),
            functions: Vec::new(),
        }
    }
}

/// What a started standalone sandbox wrote and serves.
#[derive(Debug, Clone)]
pub struct StandaloneInfo {
    pub key_file: PathBuf,
    pub config_file: PathBuf,
    /// Where `grantbridge sandbox enqueue` and `results` find the control plane.
    pub state_file: PathBuf,
    /// (name, URL) per deployed function.
    pub functions: Vec<(String, String)>,
}

/// A running standalone sandbox: Google and a control plane, serving until
/// dropped.
pub struct Standalone {
    pub google: Sandbox,
    pub control_plane: ControlPlane,
    pub info: StandaloneInfo,
}

/// The file a running standalone sandbox leaves in its folder, so that
/// `grantbridge sandbox enqueue` and `results` can reach its control plane.
pub const STATE_FILE: &str = "sandbox.json";

/// Start the sandbox, set it up as `args` says and write the files. It
/// serves until the returned [`Standalone`] is dropped.
pub async fn start_standalone(args: &StandaloneArgs) -> Result<Standalone, SandboxError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SandboxError::Write { path, source }
    };
    create_private_dir(&args.dir).map_err(write_err(&args.dir))?;
    let dir = std::fs::canonicalize(&args.dir).map_err(write_err(&args.dir))?;

    let sandbox = Sandbox::start(SandboxOptions::default()).await?;
    let sa = args.service_account.as_str();
    sandbox.create_service_account(sa);
    sandbox.attach_metadata_account(Some(sa));
    let key = sandbox.create_key(sa);
    let key_file = dir.join("sa-key.json");
    write_private(&key_file, &key.json).map_err(write_err(&key_file))?;

    let wanted = if args.functions.is_empty() {
        vec![("grant-sample".to_owned(), None)]
    } else {
        args.functions.clone()
    };
    let mut functions = Vec::new();
    for (name, upstream) in wanted {
        let imp = upstream.map_or(FunctionImpl::Sample, FunctionImpl::Proxy);
        let url = sandbox.deploy_function(&name, imp, &[sa]);
        // What the GCP setup guide grants, so `grantbridge check --online` passes here too.
        sandbox.grant_viewer(&name, sa);
        sandbox.grant_iam_policy_viewer(&name, sa);
        functions.push((name, url));
    }
    // `grantbridge functions list` lists the project: the viewer role there too.
    sandbox.grant_viewer(&format!("projects/{}", sandbox.project_id()), sa);

    // A control plane, so that `grantbridge run` has work and a place to report.
    let token = keys::random_token(32);
    let control_plane = ControlPlane::start(ControlPlaneOptions {
        connector_id: "sandbox".into(),
        tokens: vec![token.clone()],
        clock: crate::Clock::system(),
    })
    .await?;
    let token_file = dir.join("connector-token");
    write_private(&token_file, &token).map_err(write_err(&token_file))?;

    let config_file = dir.join("grantbridge.toml");
    let config = render_config(&Rendered {
        key_file: &key_file,
        project_id: sandbox.project_id(),
        functions: &functions,
        cloudfunctions_api: &sandbox.cloudfunctions_api_url(),
        control_plane: &control_plane.url(),
        token_file: &token_file,
        journal: &dir.join("journal.db"),
    });
    std::fs::write(&config_file, config).map_err(write_err(&config_file))?;
    let state_file = dir.join(STATE_FILE);
    let state = serde_json::json!({
        "control_plane": control_plane.url(),
        "functions": functions.iter().map(|(n, u)| (n.clone(), serde_json::Value::from(u.clone()))).collect::<serde_json::Map<_, _>>(),
    });
    std::fs::write(&state_file, state.to_string()).map_err(write_err(&state_file))?;

    Ok(Standalone {
        google: sandbox,
        control_plane,
        info: StandaloneInfo {
            key_file,
            config_file,
            state_file,
            functions,
        },
    })
}

/// `grantbridge sandbox`: start, print where everything is, serve until `shutdown`.
pub async fn run_standalone(
    args: StandaloneArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SandboxError> {
    let running = start_standalone(&args).await?;
    let (sandbox, info) = (&running.google, &running.info);
    println!("grantbridge sandbox is running (Google and a control plane on 127.0.0.1)");
    println!("  token endpoint      {}", sandbox.token_url());
    println!(
        "  JWKS / PEM certs    {} , {}",
        sandbox.jwks_url(),
        sandbox.pem_certs_url()
    );
    println!(
        "  metadata server     GCE_METADATA_HOST={}",
        sandbox.metadata_host()
    );
    println!("  IAM Credentials     {}", sandbox.iam_credentials_url());
    println!("  service account     {}", args.service_account);
    println!("  key file            {}", info.key_file.display());
    for (name, url) in &info.functions {
        println!("  function {name:<10} {url}");
    }
    println!(
        "  faults              curl -X POST {}/_sandbox/functions/NAME/faults -d '{{\"fail_next\":[2,503]}}'",
        sandbox.functions_base_url()
    );
    println!(
        "  invocations         curl {}/_sandbox/functions/NAME/invocations",
        sandbox.functions_base_url()
    );
    println!(
        "  control plane       {} (connector sandbox)",
        running.control_plane.url()
    );
    println!("config written to {}", info.config_file.display());
    let config = info.config_file.display();
    let dir = args.dir.display();
    println!("run:      grantbridge --config {config} run");
    println!(
        "enqueue:  grantbridge sandbox --dir {dir} enqueue {} grant-access -p grant_id=g-1 -p username=alice@example.com -p resource_type=db -p resources='[\"orders\"]' -p permission=read",
        info.functions.first().map_or("NAME", |(n, _)| n.as_str())
    );
    println!("results:  grantbridge sandbox --dir {dir} results");
    println!("audit:    grantbridge --config {config} audit");
    shutdown.await;
    drop(running);
    Ok(())
}

/// What the generated configuration points at.
struct Rendered<'a> {
    key_file: &'a Path,
    project_id: &'a str,
    functions: &'a [(String, String)],
    cloudfunctions_api: &'a str,
    control_plane: &'a str,
    token_file: &'a Path,
    journal: &'a Path,
}

fn render_config(r: &Rendered<'_>) -> String {
    let mut config = DaemonConfig::new("sandbox").key_file_connection("sandbox", r.key_file);
    for (name, url) in r.functions {
        config = config.integration(
            name,
            Integration::new("sandbox", r.project_id, name, url).set("region", "us-central1"),
        );
    }
    // The sandbox's Cloud Functions and Cloud Run Admin APIs (one listener),
    // for `grantbridge check --online`, and
    // its control plane, for `grantbridge run`.
    let config = config
        .set("google.cloudfunctions_api", r.cloudfunctions_api)
        .set("google.run_api", r.cloudfunctions_api)
        .set("control_plane.url", r.control_plane)
        .set(
            "control_plane.token_file",
            r.token_file.display().to_string(),
        )
        .journal(r.journal);
    format!(
        "# Written by `grantbridge sandbox`: points grantbridge at the local sandbox.\n\
         # It serves plain http on 127.0.0.1 (http.allow_insecure_loopback); real\n\
         # deployments never need that.\n{}",
        config.to_toml()
    )
}

/// Writes a file only its owner can read: created 0600 with `O_EXCL` beside
/// the target, then renamed over it, so no other user ever sees the contents
/// and a symlink planted at `path` is replaced, never followed.
pub(crate) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".grantbridge-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(contents.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Creates `dir` (owner-only on Unix when it is new).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_key_and_config_and_serves_the_functions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let upstream = Url::parse("http://127.0.0.1:9/").expect("url");
        let args = StandaloneArgs {
            dir: dir.path().join("out"),
            functions: vec![
                ("grant-sample".into(), None),
                ("local-fn".into(), Some(upstream)),
            ],
            ..StandaloneArgs::default()
        };
        let running = start_standalone(&args).await.expect("start");
        let (sandbox, info) = (&running.google, &running.info);
        let key: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&info.key_file).expect("key"))
                .expect("json");
        assert_eq!(key["client_email"], args.service_account.as_str());
        assert_eq!(key["token_uri"], sandbox.token_url().as_str());

        let config: toml::Table =
            toml::from_str(&std::fs::read_to_string(&info.config_file).expect("config"))
                .expect("grantbridge.toml is valid TOML");
        let get = |key: &str| {
            let mut v = &config[key.split('.').next().expect("key")];
            for part in key.split('.').skip(1) {
                v = &v[part];
            }
            v.as_str().expect(key).to_owned()
        };
        assert_eq!(get("connector_id"), "sandbox");
        assert_eq!(
            get("connections.sandbox.credentials"),
            "service_account_key"
        );
        assert_eq!(
            get("connections.sandbox.key_file"),
            info.key_file.display().to_string()
        );
        assert_eq!(
            get("integrations.local-fn.url"),
            sandbox.function_url("local-fn")
        );
        assert_eq!(get("integrations.local-fn.connection"), "sandbox");
        assert_eq!(get("integrations.grant-sample.function"), "grant-sample");
        assert_eq!(get("control_plane.url"), running.control_plane.url());
        let token_file = get("control_plane.token_file");
        let token = std::fs::read_to_string(&token_file).expect("token file");
        assert_eq!(token.len(), 32);
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&info.state_file).expect("state"))
                .expect("json");
        assert_eq!(state["control_plane"], running.control_plane.url().as_str());
        assert_eq!(get("integrations.grant-sample.region"), "us-central1");
        assert_eq!(
            get("integrations.grant-sample.project_id"),
            "sandbox-project"
        );
        assert_eq!(
            info.functions
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["grant-sample", "local-fn"]
        );

        // The service account can invoke the sample function.
        let token = sandbox
            .mint_id_token(&args.service_account, &sandbox.function_url("grant-sample"))
            .expect("mint");
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .post(sandbox.function_url("grant-sample"))
            .bearer_auth(token)
            .json(&serde_json::json!({"event_type": "get-status", "params": {}}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
    }

    #[tokio::test]
    async fn run_standalone_returns_on_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = StandaloneArgs {
            dir: dir.path().to_owned(),
            ..StandaloneArgs::default()
        };
        run_standalone(args, async {})
            .await
            .expect("runs and stops");
        assert!(dir.path().join("grantbridge.toml").exists());
        assert!(dir.path().join("sa-key.json").exists());
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only_and_replace_a_planted_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").expect("victim");
        let key = dir.path().join("sa-key.json");
        std::os::unix::fs::symlink(&victim, &key).expect("symlink");
        write_private(&key, "secret").expect("write");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "untouched"
        );
        let meta = std::fs::symlink_metadata(&key).expect("meta");
        assert!(
            meta.file_type().is_file(),
            "the symlink was replaced by a file"
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        let fresh = dir.path().join("new/dir");
        create_private_dir(&fresh).expect("dir");
        let mode = std::fs::metadata(&fresh)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
