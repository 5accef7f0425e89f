//! Helpers for the integration tests: start the real `refserver` binary on an ephemeral port,
//! read its metrics, and await conditions (never sleep as synchronisation).

#![allow(dead_code)]

pub mod raw;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Long enough for a loaded CI machine; conditions usually hold within milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The TLS listener's address, when it runs.
    pub tls_addr: Option<SocketAddr>,
    /// The profiling listener's address, when it runs.
    pub debug_addr: Option<SocketAddr>,
    /// Every stdout line (JSON logs) the server printed after the start line.
    pub logs: mpsc::UnboundedReceiver<String>,
    pub client: reqwest::Client,
}

/// A finished process that was expected not to start.
pub struct Failed {
    pub code: Option<i32>,
    pub stderr: String,
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refserver"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Server {
    /// Starts the binary with `--listen 127.0.0.1:0` unless `args` set `--listen` or the env/file
    /// set `listen`, and waits for its start line to learn the port.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all: Vec<&str> = Vec::new();
        let has_listen = args.contains(&"--listen")
            || env.iter().any(|(k, _)| *k == "REFSERVER_LISTEN")
            || args.iter().any(|a| a.starts_with("listen="));
        if !has_listen {
            all.extend(["--listen", "127.0.0.1:0"]);
        }
        all.extend(args);
        let mut child = command(&all, env).spawn().expect("spawn refserver");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        // Stderr goes to the test's stderr, so a failed start shows why.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("refserver stderr: {line}");
            }
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (addr, tls_addr, debug_addr) = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = rx.recv().await {
                let v: serde_json::Value = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                if let Some(listen) = v.get("listen").and_then(|l| l.as_str()) {
                    let other = |key: &str| {
                        let a = v.get(key).and_then(|l| l.as_str());
                        a.map(|a| a.parse::<SocketAddr>().expect("listener address"))
                    };
                    let listen = listen.parse::<SocketAddr>().expect("listen address");
                    return (listen, other("tls_listen"), other("debug_listen"));
                }
            }
            panic!("refserver exited before it started listening");
        })
        .await
        .expect("refserver start line");
        // A new connection per request: tests shorten the server's idle timeout to a few hundred
        // ms, and a pooled connection the server closes as the client reuses it fails the
        // request (IncompleteMessage) for a reason the test is not about.
        let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().expect("client");
        let server = Server { child, addr, tls_addr, debug_addr, logs: rx, client };
        server.wait_ready().await;
        server
    }

    /// Runs the binary expecting it to refuse to start.
    pub async fn fail(args: &[&str], env: &[(&str, &str)]) -> Failed {
        let out = tokio::time::timeout(DEADLINE, command(args, env).output())
            .await
            .expect("refserver exits")
            .expect("run refserver");
        Failed { code: out.status.code(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    pub async fn wait_ready(&self) {
        wait_for("readyz 200", || async { self.get("/readyz").await.status() == 200 }).await;
    }

    /// The sum of all samples whose line starts with `prefix` (a metric name, optionally with
    /// the start of its labels), 0 when there is none.
    pub async fn metric(&self, prefix: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics body");
        metric_in(&text, prefix)
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_log(&mut self, needle: &str) -> String {
        tokio::time::timeout(DEADLINE, async {
            while let Some(line) = self.logs.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("the log ended without {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no log line with {needle:?}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running child has a pid")
    }

    /// Sends a signal with kill(1): the tests need no unsafe code.
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    pub async fn wait_exit(&mut self) -> Option<i32> {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("refserver exits in time")
            .expect("wait")
            .code()
    }
}

pub fn metric_in(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter(|l| prefix.contains('{') || matches!(l[prefix.len()..].chars().next(), Some(' ' | '{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `cond` until it holds, or panics with `what` after `DEADLINE`.
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if cond().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replaces a file atomically, the way editors and ConfigMaps do.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}
