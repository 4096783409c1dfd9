//! What the fault tests share (compiler/tests/faults.rs and chain_faults.rs: boxes as
//! processes; compiler/tests/docker.rs: boxes as containers), included by each with `#[path]`:
//! building the webkvs binary, the processes of a run, a client load over HTTP, and the
//! figures drawn from it.
//!
//! The load is one thread doing sequential `PUT /<key>` of distinct keys, each with a value of
//! its own, and recording every attempt: when it started, how long it took, and whether it was
//! acknowledged (`200 stored <key>`). A request that fails or times out is not acknowledged and
//! never retried (the next one uses a new key), so "every acknowledged write is readable with
//! its value" is exactly the promise the replicated store makes.

#![allow(dead_code)] // each test uses a different part

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("inside the workspace")
        .to_path_buf()
}

/// Generates the webkvs crate with `ovidc build --no-compile` into `target/<dir>/webkvs`,
/// compiles it with cargo in the shared target directory `target/e2e` (the one the end-to-end
/// tests use, so the dependencies compile once), and copies the binary to `target/<dir>/bin/`
/// (another test building the same package may replace the one in `target/e2e` meanwhile).
pub fn build_webkvs(ovidc: &str, dir: &str) -> PathBuf {
    build_example(ovidc, dir, "examples/webkvs/webkvs.ovid")
}

/// Like [`build_webkvs`], for the system of another `.ovid` file (relative to the root); its
/// crate goes to `target/<dir>/<file stem>`.
pub fn build_example(ovidc: &str, dir: &str, file: &str) -> PathBuf {
    let root = root();
    let out = root.join("target").join(dir);
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("system");
    let krate = out.join(stem);
    let started = Instant::now();
    let status = Command::new(ovidc)
        .current_dir(&root)
        .args(["build", file, "-o"])
        .arg(&krate)
        .arg("--no-compile")
        .status()
        .expect("ovidc starts");
    assert!(status.success(), "ovidc build --no-compile failed");
    let manifest =
        std::fs::read_to_string(krate.join("Cargo.toml")).expect("the generated Cargo.toml");
    // The binary's name (the system's), from the `[[bin]]` section: the package's name carries
    // a hash of the source file too.
    let package = manifest
        .split("[[bin]]")
        .nth(1)
        .and_then(|bin| {
            bin.lines().find_map(|l| {
                l.strip_prefix("name = \"")
                    .and_then(|rest| rest.strip_suffix('"'))
            })
        })
        .expect("a binary name")
        .to_string();
    let target = root.join("target/e2e");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--manifest-path"])
        .arg(krate.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cargo starts");
    assert!(
        status.success(),
        "the generated webkvs crate did not compile"
    );
    let bin = out.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let dest = bin.join(&package);
    let _ = std::fs::remove_file(&dest);
    std::fs::copy(target.join("debug").join(&package), &dest).expect("copy the binary");
    println!(
        "built {} in {:.1} s",
        dest.display(),
        started.elapsed().as_secs_f64()
    );
    dest
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` distinct free ports (held together while choosing, so they differ).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One HTTP/1.0 exchange with a time limit: the status code and the body (trimmed).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    limit: Duration,
) -> std::io::Result<(u16, String)> {
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
    })?;
    let mut s = TcpStream::connect_timeout(&sock, limit)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok((status, body))
}

/// An error of [`http`] in words: a read that timed out is `WouldBlock` on Linux.
pub fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no answer within {} s", REQUEST_LIMIT.as_secs())
        }
        _ => e.to_string(),
    }
}

/// Waits until `GET /index` answers the seeded page (every box is up and each shard has a
/// majority), or panics after `limit`.
pub fn wait_until_serving(addr: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < limit {
        match http(addr, "GET", "/index", "", Duration::from_secs(2)) {
            Ok((200, body)) if body == "<h1>index</h1>" => return started.elapsed(),
            Ok(other) => last = format!("{other:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("webkvs never served the seeded page on {addr} (last answer: {last})");
}

/// One request of the load.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub key: String,
    pub value: String,
    /// When it was sent, from the start of the load.
    pub sent: Duration,
    /// How long until the answer (or the failure).
    pub took: Duration,
    /// `200 stored <key>`.
    pub acked: bool,
    /// What went wrong, if it was not acknowledged.
    pub error: Option<String>,
}

impl Attempt {
    /// When the answer came, from the start of the load.
    pub fn done(&self) -> Duration {
        self.sent + self.took
    }
}

/// A client load running in a thread of its own.
pub struct Load {
    pub started: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Attempt>>>,
}

/// The time limit of one request of the load: longer than any fail-over should take.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(10);

impl Load {
    /// Starts sequential PUTs to `addr` of keys `<prefix>-0`, `<prefix>-1`, ...
    pub fn start(addr: &str, prefix: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let (addr, prefix, flag) = (addr.to_string(), prefix.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut attempts = Vec::new();
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let key = format!("{prefix}-{i}");
                let value = format!("value {i} of {prefix}");
                let sent = started.elapsed();
                let t = Instant::now();
                let answer = http(&addr, "PUT", &format!("/{key}"), &value, REQUEST_LIMIT);
                let took = t.elapsed();
                let (acked, error) = match answer {
                    Ok((200, body)) if body == format!("stored {key}") => (true, None),
                    Ok((status, body)) => (false, Some(format!("{status} {body}"))),
                    Err(e) => (false, Some(describe(&e))),
                };
                if error.is_some() {
                    // Do not spin on a refused connection.
                    std::thread::sleep(Duration::from_millis(20));
                }
                attempts.push(Attempt {
                    key,
                    value,
                    sent,
                    took,
                    acked,
                    error,
                });
                i += 1;
            }
            attempts
        });
        Load {
            started,
            stop,
            thread: Some(thread),
        }
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the load (after its current request) and returns every attempt.
    pub fn finish(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("once")
            .join()
            .expect("the load thread panicked")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads every acknowledged key back: the ones whose value is not the one written, with what
/// came back instead. After five requests in a row that get no answer at all, the service is
/// taken to be down and the keys not yet read are reported as lost (`not read: ...`) rather
/// than waited for one by one.
pub fn lost_writes(addr: &str, attempts: &[Attempt]) -> Vec<(String, String, String)> {
    let mut lost = Vec::new();
    let mut silent = 0;
    for a in attempts.iter().filter(|a| a.acked) {
        if silent >= 5 {
            lost.push((
                a.key.clone(),
                a.value.clone(),
                "not read: the service stopped answering".to_string(),
            ));
            continue;
        }
        let got = match http(addr, "GET", &format!("/{}", a.key), "", REQUEST_LIMIT) {
            Ok((200, body)) if body == a.value => {
                silent = 0;
                continue;
            }
            Ok((status, body)) => {
                silent = 0;
                format!("{status} {body}")
            }
            Err(e) => {
                silent += 1;
                describe(&e)
            }
        };
        lost.push((a.key.clone(), a.value.clone(), got));
    }
    lost
}

/// At most `n` of `lost`, for an assertion message.
pub fn some(lost: &[(String, String, String)], n: usize) -> String {
    let shown: Vec<String> = lost
        .iter()
        .take(n)
        .map(|(k, v, got)| format!("{k} = {v:?}, read back: {got}"))
        .collect();
    format!(
        "{} of them, the first {}:\n{}",
        lost.len(),
        shown.len(),
        shown.join("\n")
    )
}

/// The longest time without an acknowledgement around a fault at `at` (from the start of the
/// load), up to `until`: from the last acknowledgement before the fault (or the fault itself)
/// through every acknowledgement up to `until`, the largest gap between consecutive ones —
/// including the gap from the last one to `until`, so a service that never came back shows.
pub fn recovery(attempts: &[Attempt], at: Duration, until: Duration) -> Duration {
    let mut acks: Vec<Duration> = attempts
        .iter()
        .filter(|a| a.acked)
        .map(Attempt::done)
        .collect();
    acks.sort();
    let mut last = acks
        .iter()
        .copied()
        .filter(|t| *t <= at)
        .max()
        .unwrap_or(at);
    let mut longest = Duration::ZERO;
    for t in acks.iter().copied().filter(|t| *t > at && *t <= until) {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(until.saturating_sub(last))
}

/// Acknowledged writes that completed after `from` (from the start of the load).
pub fn acked_after(attempts: &[Attempt], from: Duration) -> usize {
    attempts
        .iter()
        .filter(|a| a.acked && a.sent >= from)
        .count()
}

/// Asserts that the service went on through every phase (`what`, from, to: from one fault to
/// the next, or the end): at least 10 writes sent in each were acknowledged.
pub fn assert_went_on(attempts: &[Attempt], phases: &[(&str, Duration, Duration)]) {
    for (what, from, to) in phases {
        let n = attempts
            .iter()
            .filter(|a| a.acked && a.sent >= *from && a.sent < *to)
            .count();
        assert!(
            n >= 10,
            "service did not go on after {what}: {n} writes acknowledged"
        );
    }
}

/// The end of a fault test under load: no acknowledged write `lost`, at least 10 acknowledged
/// before the first phase (or the run means nothing), the service went on through every phase
/// ([`assert_went_on`]), and some write was acknowledged in the last two seconds before `until`.
pub fn assert_served_throughout(
    attempts: &[Attempt],
    lost: &[(String, String, String)],
    phases: &[(&str, Duration, Duration)],
    until: Duration,
) {
    assert!(
        lost.is_empty(),
        "acknowledged writes lost: {}",
        some(lost, 20)
    );
    let first = phases.first().map(|p| p.1).unwrap_or(until);
    assert!(
        attempts
            .iter()
            .filter(|a| a.acked && a.sent < first)
            .count()
            >= 10,
        "too few writes before the first fault to mean anything"
    );
    assert_went_on(attempts, phases);
    let last_two_seconds = acked_after(attempts, until.saturating_sub(Duration::from_secs(2)));
    assert!(
        last_two_seconds > 0,
        "no write acknowledged in the last two seconds of the run"
    );
}

/// The `q` quantile (0..=1) of the latencies of acknowledged writes.
pub fn quantile(attempts: &[Attempt], q: f64) -> Duration {
    let mut took: Vec<Duration> = attempts
        .iter()
        .filter(|a| a.acked)
        .map(|a| a.took)
        .collect();
    if took.is_empty() {
        return Duration::ZERO;
    }
    took.sort();
    let i = ((took.len() as f64 - 1.0) * q).round() as usize;
    took[i.min(took.len() - 1)]
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The distinct errors of unacknowledged attempts, with their counts.
pub fn error_summary(attempts: &[Attempt]) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for a in attempts.iter().filter(|a| !a.acked) {
        *counts
            .entry(a.error.clone().unwrap_or_default())
            .or_default() += 1;
    }
    counts.into_iter().collect()
}

/// Prints the figures every fault test reports.
pub fn print_figures(
    title: &str,
    attempts: &[Attempt],
    lost: usize,
    faults: &[(&str, Duration, Duration)],
) {
    let acked = attempts.iter().filter(|a| a.acked).count();
    println!("== {title}");
    println!("writes attempted:    {}", attempts.len());
    println!("writes acknowledged: {acked}");
    println!(
        "writes not acknowledged (failed or timed out, never retried): {}",
        attempts.len() - acked
    );
    for (error, n) in error_summary(attempts) {
        println!("    {n} x {error}");
    }
    println!("acknowledged writes lost: {lost}");
    for (what, at, until) in faults {
        println!(
            "{what} at {:.2} s: time to recover (longest gap between acknowledgements) {}; {} writes acknowledged after it",
            at.as_secs_f64(),
            ms(recovery(attempts, *at, *until)),
            attempts
                .iter()
                .filter(|a| a.acked && a.sent >= *at && a.sent < *until)
                .count()
        );
    }
    println!(
        "latency of acknowledged writes: p50 {}, p99 {}, max {}",
        ms(quantile(attempts, 0.5)),
        ms(quantile(attempts, 0.99)),
        ms(quantile(attempts, 1.0))
    );
}

/// The last `n` lines of a file (for failure reports).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a command to completion; its stdout, or a panic with its stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The processes of one run; killed (SIGKILL) and reaped when dropped, so a failing test leaves
/// nothing behind. On a panic it prints the end of every log.
pub struct Processes {
    logs: PathBuf,
    /// Name, process, log file; a restarted process is a new entry with a log of its own.
    children: Vec<(String, Child, PathBuf)>,
}

impl Processes {
    pub fn new(logs: PathBuf) -> Processes {
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).unwrap();
        Processes {
            logs,
            children: Vec::new(),
        }
    }

    /// The latest process named `name`.
    pub fn latest(&mut self, name: &str) -> &mut (String, Child, PathBuf) {
        self.children
            .iter_mut()
            .rev()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Starts `bin args…` as `name`, its stdout and stderr into `<logs>/<name>.log` (or
    /// `<name>.2.log`, … when started again).
    pub fn start(&mut self, name: &str, bin: &Path, args: &[&str], env: &[(&str, &str)]) {
        let n = self.children.iter().filter(|(c, _, _)| c == name).count();
        let log = self.logs.join(if n == 0 {
            format!("{name}.log")
        } else {
            format!("{name}.{}.log", n + 1)
        });
        let file = File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.children.push((name.to_string(), child, log));
    }

    /// Waits until the log of the latest `name` holds `text`.
    pub fn wait_for(&mut self, name: &str, text: &str, limit: Duration) {
        let started = Instant::now();
        let (_, child, log) = self.latest(name);
        while started.elapsed() < limit {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(text)
            {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited ({status}) before printing `{text}`:\n{}",
                    tail(log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{name} did not print `{text}` within {limit:?}:\n{}",
            tail(log, 30)
        );
    }

    /// What the latest `name` has printed so far.
    pub fn log(&mut self, name: &str) -> String {
        std::fs::read_to_string(&self.latest(name).2).unwrap_or_default()
    }

    /// `kill -9`, and reap it.
    pub fn kill(&mut self, name: &str) {
        let (_, child, _) = self.latest(name);
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    /// Panics if a process stopped on its own (none should).
    pub fn check_alive(&mut self, killed: &[&str]) {
        let mut seen = std::collections::BTreeSet::new();
        for (name, child, log) in self.children.iter_mut().rev() {
            // Only the latest process of each name, and not the ones the test killed last.
            if !seen.insert(name.clone()) || killed.contains(&name.as_str()) {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} stopped on its own ({status}):\n{}", tail(log, 40));
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _, log) in &self.children {
                eprintln!(
                    "---- end of {name}'s log ({}):\n{}",
                    log.display(),
                    tail(log, 40)
                );
            }
        }
    }
}
