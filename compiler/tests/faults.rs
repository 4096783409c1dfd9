//! A fault test with real processes: examples/webkvs (sharded two ways, every shard replicated
//! three ways) runs as one process for the controller and one per box, all on loopback at free
//! ports; a client load writes over HTTP while a storage box is killed with SIGKILL. Every
//! acknowledged write must still be readable with its value, and the service must go on.
//!
//! `cargo test -p ovidc --test faults -- --nocapture` prints the figures (docs/operations.md).

#[path = "../../tests/docker/harness.rs"]
mod harness;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;

/// The processes of one run; killed (SIGKILL) and reaped when dropped, so a failing test leaves
/// nothing behind. On a panic it prints the end of every log.
struct Processes {
    logs: PathBuf,
    children: Vec<(String, Child)>,
}

impl Processes {
    fn new(logs: PathBuf) -> Processes {
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).unwrap();
        Processes { logs, children: Vec::new() }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts `bin args…` as `name`, its stdout and stderr into `<logs>/<name>.log`.
    fn start(&mut self, name: &str, bin: &Path, args: &[&str], env: &[(&str, &str)]) {
        let log = File::create(self.log(name)).unwrap();
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.children.push((name.to_string(), child));
    }

    /// Waits until `name`'s log holds `text`.
    fn wait_for(&mut self, name: &str, text: &str, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if std::fs::read_to_string(self.log(name)).unwrap_or_default().contains(text) {
                return;
            }
            if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name) {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{name} exited ({status}) before printing `{text}`:\n{}", tail(&self.log(name), 30));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{name} did not print `{text}` within {limit:?}:\n{}", tail(&self.log(name), 30));
    }

    /// `kill -9`, and reap it.
    fn kill(&mut self, name: &str) {
        let (_, child) = self.children.iter_mut().find(|(n, _)| n == name).expect("a started process");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    /// Every process still running (none should have stopped on its own).
    fn check_alive(&mut self, except: &str) {
        for (name, child) in &mut self.children {
            if name != except {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{name} stopped on its own ({status}):\n{}", tail(&self.logs.join(format!("{name}.log")), 40));
                }
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                eprintln!("---- end of {name}'s log ({}):\n{}", self.log(name).display(), tail(&self.log(name), 40));
            }
        }
    }
}

/// CPU time a process has used so far, in clock ticks (utime + stime of /proc/<pid>/stat).
fn cpu_ticks(child: &Child) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let get = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// The storage box to kill: `$OVID_FAULTS_KILL` if set, else the one that holds a replica
/// leader. The replica proxies do not log who leads, so it is inferred from work done: under a
/// write load the leader of a shard receives every request, sends each log entry to both
/// followers, collects their acknowledgements and answers the ingress proxy, while a follower
/// only acknowledges entries; so the storage process that uses the most CPU over `window`
/// holds a leader (with two shards, it may hold both).
fn victim(p: &Processes, window: Duration) -> String {
    if let Ok(name) = std::env::var("OVID_FAULTS_KILL") {
        return name;
    }
    let stores: Vec<(&str, &Child)> =
        p.children.iter().filter(|(n, _)| n.starts_with("store")).map(|(n, c)| (n.as_str(), c)).collect();
    let before: Vec<u64> = stores.iter().map(|(_, c)| cpu_ticks(c)).collect();
    std::thread::sleep(window);
    let mut busiest = ("store0", 0u64);
    let mut used = Vec::new();
    for ((name, child), t0) in stores.iter().zip(before) {
        let ticks = cpu_ticks(child) - t0;
        used.push(format!("{name} {ticks}"));
        if ticks > busiest.1 {
            busiest = (name, ticks);
        }
    }
    println!("CPU ticks used by the storage boxes over {window:?} of load: {}; the busiest holds a leader", used.join(", "));
    busiest.0.to_string()
}

#[test]
fn webkvs_survives_a_killed_storage_box() {
    let test_started = Instant::now();
    let bin = build_webkvs(env!("CARGO_BIN_EXE_ovidc"), "faults");
    let after_build = Instant::now();
    let ports = free_ports(7);
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let (controller, http_addr) = (addr(0), addr(6));
    let boxes = [("store0", addr(1)), ("store1", addr(2)), ("store2", addr(3)), ("routing", addr(4)), ("front", addr(5))];

    let mut p = Processes::new(root().join("target/faults/logs"));
    p.start("controller", &bin, &["controller", "--listen", &controller], &[]);
    p.wait_for("controller", "controller listening", Duration::from_secs(30));
    for (name, listen) in &boxes {
        p.start(name, &bin, &["box", name, "--controller", &controller, "--listen", listen], &[("WEBKVS_ADDR", &http_addr)]);
    }
    for (name, _) in &boxes {
        p.wait_for(name, &format!("box {name} listening"), Duration::from_secs(30));
    }
    let ready = wait_until_serving(&http_addr, Duration::from_secs(60));
    println!("webkvs serving on {http_addr}, {} ms after the boxes started", ready.as_millis());

    let load = Load::start(&http_addr, "faults");
    std::thread::sleep(Duration::from_secs(1));
    let victim = victim(&p, Duration::from_secs(2));
    let killed_at = load.now();
    p.kill(&victim);
    println!("killed {victim} (SIGKILL) at {:.2} s", killed_at.as_secs_f64());
    std::thread::sleep(Duration::from_secs(10));
    let until = load.now();
    let attempts = load.finish();
    p.check_alive(&victim);

    let lost = lost_writes(&http_addr, &attempts);
    print_figures(
        &format!("webkvs as processes, {victim} killed with SIGKILL"),
        &attempts,
        lost.len(),
        &[(&format!("kill -9 {victim}"), killed_at, until)],
    );
    println!("test time: {:.1} s after the build ({:.1} s in all)", after_build.elapsed().as_secs_f64(), test_started.elapsed().as_secs_f64());

    assert!(lost.is_empty(), "acknowledged writes lost (key, value written, read back): {lost:#?}");
    assert!(attempts.iter().filter(|a| a.acked && a.sent < killed_at).count() >= 10, "too few writes before the kill to mean anything");
    let after = acked_after(&attempts, killed_at);
    assert!(after >= 10, "service did not resume after the kill: {after} writes acknowledged after it");
    let last_two_seconds = acked_after(&attempts, until.saturating_sub(Duration::from_secs(2)));
    assert!(last_two_seconds > 0, "no write acknowledged in the last two seconds of the run");
}
