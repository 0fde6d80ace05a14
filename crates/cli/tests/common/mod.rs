//! Running the real `medvault` binary: commands, and a server process on a real socket.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn medvault() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_medvault"));
    command.env_remove("MEDVAULT_DATA_DIR").env_remove("MEDVAULT_KEY_FILE").env_remove("MEDVAULT_LISTEN");
    command
}

pub fn run(args: &[&str]) -> Output {
    medvault().args(args).stdin(Stdio::null()).output().expect("medvault runs")
}

pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `medvault init` in `dir/data`; returns its output.
pub fn init(dir: &Path) -> String {
    let data = dir.join("data");
    let output = run(&["init", "--data-dir", data.to_str().expect("utf8")]);
    assert!(output.status.success(), "init failed: {}", text(&output));
    text(&output)
}

/// A service client's token with `scopes` (e.g. `system/*.cruds`).
pub fn token(dir: &Path, client: &str, scopes: &str) -> String {
    let data = dir.join("data");
    let output =
        run(&["token", "create", "--data-dir", data.to_str().expect("utf8"), "--client", client, "--scope", scopes]);
    assert!(output.status.success(), "token create failed: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A `medvault serve` process; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub address: SocketAddr,
    pub log: PathBuf,
}

impl ServerProcess {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let data = dir.join("data");
        let log =
            dir.join(format!("server-{}.log", Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id())));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = medvault()
            .args(["serve", "--data-dir", data.to_str().expect("utf8"), "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("MEDVAULT_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("Serving FHIR R4 at ") {
                    let authority =
                        rest.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or("").to_string();
                    let _ = sender.send(authority);
                }
            }
        });
        let authority = receiver.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the server did not start: {}", std::fs::read_to_string(&log).unwrap_or_default())
        });
        Self { child, address: authority.parse().expect("address"), log }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_hard();
        panic!("the server did not stop on SIGTERM");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
