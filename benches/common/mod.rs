//! What the benches share: the release `grantbridge` binary run as a child
//! process (as in production: its own allocator, runtime and threads; RSS read
//! from `/proc/PID/status`, never estimated) against the sandbox and the
//! simulated control plane in the bench process, and the figures' spread.

#![allow(dead_code)] // each bench uses part of it

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use grantbridge_sandbox::daemon_config::DaemonConfig;
use grantbridge_sandbox::{ControlPlane, ControlPlaneOptions, Sandbox, SandboxOptions};

pub const SA: &str = "bench@sandbox-project.iam.gserviceaccount.com";

/// The sandbox with the bench's service account and its key file.
pub struct Google {
    pub sandbox: Sandbox,
    pub key_file: PathBuf,
}

pub async fn google(dir: &Path) -> Google {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sandbox.create_service_account(SA);
    let key_file = dir.join("sa.json");
    std::fs::write(&key_file, sandbox.create_key(SA).json).unwrap();
    Google { sandbox, key_file }
}

/// The front end a bench calls the functions through: the sandbox's plain
/// one (HTTP/1.1, a connection per concurrent call), or its TLS one (HTTP/2 by
/// ALPN, as Google's), whose CA is written to a file for clients that trust a
/// bundle by path (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`).
pub struct FrontEnd {
    tls: Option<(grantbridge_sandbox::TlsFrontEnd, PathBuf)>,
}

impl FrontEnd {
    pub async fn start(sandbox: &Sandbox, dir: &Path, tls: bool) -> FrontEnd {
        if !tls {
            return FrontEnd { tls: None };
        }
        let front_end = sandbox.functions_tls().await.unwrap();
        let bundle = dir.join("front-end-ca.pem");
        std::fs::write(&bundle, &front_end.ca_pem).unwrap();
        FrontEnd {
            tls: Some((front_end, bundle)),
        }
    }

    /// The URL of function `name` at this front end.
    pub fn url(&self, sandbox: &Sandbox, name: &str) -> String {
        match &self.tls {
            Some((tls, _)) => tls.function_url(name),
            None => sandbox.function_url(name),
        }
    }

    /// The CA to trust, for the TLS front end.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|(tls, _)| tls.ca_pem.as_str())
    }

    /// The file holding that CA, for the TLS front end.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, bundle)| bundle.as_path())
    }

    /// What grantbridge's environment needs to trust the front end.
    pub fn daemon_env(&self) -> Vec<(&'static str, &Path)> {
        self.ca_file()
            .map(|bundle| ("SSL_CERT_FILE", bundle))
            .into_iter()
            .collect()
    }
}

pub async fn control_plane() -> ControlPlane {
    ControlPlane::start(ControlPlaneOptions {
        connector_id: "bench".into(),
        tokens: vec!["t".into()],
        clock: grantbridge_sandbox::Clock::system(),
    })
    .await
    .unwrap()
}

/// A port nothing listens on (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `grantbridge run`.
pub struct Daemon {
    child: tokio::process::Child,
    pub admin: String,
    http: reqwest::Client,
    /// From spawn to the first `/readyz` 200.
    pub ready_after: Duration,
}

impl Daemon {
    /// Writes `config` (plus an admin listener) to `dir` and starts the
    /// release binary on it; returns once `/readyz` answers 200.
    pub async fn start(dir: &Path, config: DaemonConfig) -> Daemon {
        Self::start_with_env(dir, config, &[]).await
    }

    /// [`Daemon::start`] with extra environment variables (`SSL_CERT_FILE`).
    pub async fn start_with_env(dir: &Path, config: DaemonConfig, env: &[(&str, &Path)]) -> Daemon {
        let admin = format!("127.0.0.1:{}", free_port());
        let path = dir.join("grantbridge.toml");
        config
            .set("admin.listen", admin.as_str())
            .write_to(&path)
            .unwrap();
        let started = Instant::now();
        // Logs as in production (JSON lines at the default level), to a file.
        let log = std::fs::File::create(dir.join("grantbridge.log")).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_grantbridge"))
            .args(["run", "--config"])
            .arg(&path)
            .env("T", "t")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the grantbridge binary starts");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let ready = format!("http://{admin}/readyz");
        let ready_after = loop {
            if let Ok(r) = http.get(&ready).send().await
                && r.status() == 200
            {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "grantbridge did not become ready"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        Daemon {
            child,
            admin,
            http,
            ready_after,
        }
    }

    /// CPU time the daemon has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// `VmRSS` of the daemon, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// The daemon's `/metrics` page.
    async fn metrics_text(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of an unlabelled metric (`grantbridge_journal_writes_total`).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// The sum of every series of a metric, labelled or not
    /// (`grantbridge_function_latency_seconds_sum`); 0 when there is none.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.parse::<f64>().ok()
            })
            .sum()
    }

    /// SIGTERM, then wait for the exit.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// CPU time (user + system) process `pid` has used, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// `VmRSS` of process `pid`, in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// The peak of `RssAnon` (private memory: heap, stacks; not the pages of
/// the executable and libraries, which are shared and reclaimable) of a
/// process, sampled every 10 ms on a thread of its own until [`AnonPeak::stop`].
pub struct AnonPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl AnonPeak {
    pub fn start(pid: u32) -> AnonPeak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    Ok(status) => {
                        let anon = status
                            .lines()
                            .find_map(|l| l.strip_prefix("RssAnon:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                            .unwrap_or(0);
                        peak = peak.max(anon);
                    }
                    Err(_) => break,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        AnonPeak { stop, thread }
    }

    /// The peak seen, in KiB.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// `VmHWM` (the peak RSS so far) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// The median of `values`.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

/// `median [min–max]` of `values`.
pub fn spread(values: &[f64], digits: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.digits$} [{min:.digits$}–{max:.digits$}]",
        median(values)
    )
}

/// The value after `--name` on the command line.
pub fn flag(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// The `q` quantile (0..=1) of sorted `values`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
