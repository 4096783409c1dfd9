//! A fault test with real processes: examples/webkvs (sharded two ways, every shard replicated
//! three ways) runs as one process for the controller and one per box, all on loopback at free
//! ports; a client load writes over HTTP while a storage box is killed with SIGKILL. Every
//! acknowledged write must still be readable with its value, and the service must go on.
//!
//! `cargo test -p ovidc --test faults -- --nocapture` prints the figures (docs/operations.md).

#[path = "../../tests/docker/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use harness::*;

/// CPU time a process has used so far, in clock ticks (utime + stime of /proc/<pid>/stat).
fn cpu_ticks(child: &Child) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// Of `candidates`, the storage box to kill: `$OVID_FAULTS_KILL` if set (and a candidate),
/// else the one that holds a replica leader. The replica proxies do not log who leads, so it is
/// inferred from work done: under a write load the leader of a shard receives every request,
/// sends each log entry to both followers, collects their acknowledgements and answers the
/// ingress proxy, while a follower only acknowledges entries; so the storage process that uses
/// the most CPU over `window` holds a leader (with two shards, it may hold both).
fn victim(p: &mut Processes, candidates: &[&str], window: Duration) -> String {
    if let Ok(name) = std::env::var("OVID_FAULTS_KILL")
        && candidates.contains(&name.as_str())
    {
        return name;
    }
    let before: Vec<u64> = candidates
        .iter()
        .map(|c| cpu_ticks(&p.latest(c).1))
        .collect();
    std::thread::sleep(window);
    let used: Vec<u64> = candidates
        .iter()
        .zip(before)
        .map(|(c, b)| cpu_ticks(&p.latest(c).1).saturating_sub(b))
        .collect();
    let shown: Vec<String> = candidates
        .iter()
        .zip(&used)
        .map(|(c, u)| format!("{c} {u}"))
        .collect();
    println!(
        "CPU ticks used by the storage boxes over {window:?} of load: {}; the busiest holds a leader",
        shown.join(", ")
    );
    let best = (0..candidates.len())
        .max_by_key(|i| (used[*i], std::cmp::Reverse(*i)))
        .unwrap();
    candidates[best].to_string()
}

/// webkvs running as processes on loopback.
struct Running {
    p: Processes,
    bin: PathBuf,
    controller: String,
    http: String,
    boxes: Vec<(&'static str, String)>,
}

impl Running {
    /// Builds webkvs, starts the controller and every box at free ports, waits until it serves.
    fn start(logs: &str) -> Running {
        Running::start_system(
            logs,
            "examples/webkvs/webkvs.ovid",
            &["store0", "store1", "store2", "routing", "front"],
        )
    }

    /// Builds the system of `file` (a variant of webkvs with these boxes), starts the
    /// controller and every box at free ports, waits until it serves.
    fn start_system(logs: &str, file: &str, names: &[&'static str]) -> Running {
        let bin = build_example(env!("CARGO_BIN_EXE_ovidc"), "faults", file);
        let ports = free_ports(names.len() + 2);
        let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let (controller, http) = (addr(0), addr(names.len() + 1));
        let boxes = names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, addr(i + 1)))
            .collect();
        let mut p = Processes::new(root().join("target/faults").join(logs));
        p.start(
            "controller",
            &bin,
            &["controller", "--listen", &controller],
            &[],
        );
        p.wait_for(
            "controller",
            "controller listening",
            Duration::from_secs(30),
        );
        let mut r = Running {
            p,
            bin,
            controller,
            http,
            boxes,
        };
        for i in 0..r.boxes.len() {
            r.start_box(r.boxes[i].0);
        }
        let ready = wait_until_serving(&r.http, Duration::from_secs(60));
        println!(
            "webkvs serving on {}, {} ms after the boxes started",
            r.http,
            ready.as_millis()
        );
        r
    }

    /// Starts (or starts again) box `name` at its address.
    fn start_box(&mut self, name: &str) {
        let listen = self
            .boxes
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a box of the system")
            .1
            .clone();
        let args = [
            "box",
            name,
            "--controller",
            &self.controller,
            "--listen",
            &listen,
        ];
        self.p
            .start(name, &self.bin, &args, &[("WEBKVS_ADDR", &self.http)]);
        self.p.wait_for(
            name,
            &format!("box {name} listening"),
            Duration::from_secs(30),
        );
    }
}

/// The fault tests take turns: they share the built binary (copying it while the other runs
/// it fails with "text file busy"), and each needs the CPU to itself to measure recovery.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn webkvs_survives_a_killed_storage_box() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let test_started = Instant::now();
    let mut r = Running::start("kill");
    let after_build = Instant::now();

    let load = Load::start(&r.http, "kill");
    std::thread::sleep(Duration::from_secs(1));
    let victim = victim(
        &mut r.p,
        &["store0", "store1", "store2"],
        Duration::from_secs(2),
    );
    let killed_at = load.now();
    r.p.kill(&victim);
    println!(
        "killed {victim} (SIGKILL) at {:.2} s",
        killed_at.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(10));
    let until = load.now();
    let attempts = load.finish();
    r.p.check_alive(&[&victim]);

    let lost = lost_writes(&r.http, &attempts);
    print_figures(
        &format!("webkvs as processes, {victim} killed with SIGKILL"),
        &attempts,
        lost.len(),
        &[(&format!("kill -9 {victim}"), killed_at, until)],
    );
    println!(
        "test time: {:.1} s after the build and start ({:.1} s in all)",
        after_build.elapsed().as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );

    assert_served_throughout(&attempts, &lost, &[("the kill", killed_at, until)], until);
}

/// A storage box killed and started again must rejoin: its replica proxies recover the log
/// from their peers (docs/replication.md), so that when another storage box is killed next,
/// the restarted one and the third still form a majority of every shard.
#[test]
fn a_restarted_storage_box_rejoins() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = Running::start("restart");
    let stores = ["store0", "store1", "store2"];
    let load = Load::start(&r.http, "restart");
    std::thread::sleep(Duration::from_secs(1));
    let first = victim(&mut r.p, &stores, Duration::from_secs(2));
    let killed_at = load.now();
    r.p.kill(&first);
    println!(
        "killed {first} (SIGKILL) at {:.2} s",
        killed_at.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let restarted_at = load.now();
    r.start_box(&first);
    println!(
        "started {first} again at {:.2} s",
        restarted_at.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let others: Vec<&str> = stores.iter().copied().filter(|s| *s != first).collect();
    let second = victim(&mut r.p, &others, Duration::from_secs(2));
    let second_at = load.now();
    r.p.kill(&second);
    println!(
        "killed {second} (SIGKILL) at {:.2} s",
        second_at.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(8));
    let until = load.now();
    let attempts = load.finish();
    r.p.check_alive(&[&second]);

    let lost = lost_writes(&r.http, &attempts);
    print_figures(
        &format!("webkvs as processes, {first} killed and started again, then {second} killed"),
        &attempts,
        lost.len(),
        &[
            (&format!("kill -9 {first}"), killed_at, restarted_at),
            (&format!("restart {first}"), restarted_at, second_at),
            (&format!("kill -9 {second}"), second_at, until),
        ],
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost: {}",
        some(&lost, 20)
    );
    assert_went_on(
        &attempts,
        &[
            ("the first kill", killed_at, restarted_at),
            ("the restart", restarted_at, second_at),
            ("the second kill", second_at, until),
        ],
    );
}

/// `primary_backup(3)` as processes (examples/webkvs/webkvs-pb.ovid: one copy per storage box,
/// the controller in a process of its own): under a write load the primary's box (store0: copy 0
/// is the first primary) is killed with SIGKILL. The controller's failure detector declares it
/// dead, makes a backup the primary of the next view, and the ingress proxy follows: every
/// acknowledged write must still be readable, and the service must go on.
#[test]
fn primary_backup_fails_over_when_the_primary_is_killed() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let test_started = Instant::now();
    let mut r = Running::start_system(
        "pb-kill",
        "examples/webkvs/webkvs-pb.ovid",
        &["store0", "store1", "store2", "front"],
    );
    let after_build = Instant::now();

    let load = Load::start(&r.http, "pb");
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = load.now();
    r.p.kill("store0");
    println!(
        "killed store0, the primary's box (SIGKILL), at {:.2} s",
        killed_at.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(6));
    let until = load.now();
    let attempts = load.finish();
    r.p.check_alive(&["store0"]);
    let controller_log = std::fs::read_to_string(&r.p.latest("controller").2).unwrap_or_default();
    assert!(
        controller_log.contains("box declared dead")
            && controller_log.contains("the primary failed"),
        "the controller did not fail over:\n{}",
        tail(&r.p.latest("controller").2, 30)
    );

    let lost = lost_writes(&r.http, &attempts);
    print_figures(
        "primary_backup(3) as processes, the primary's box store0 killed with SIGKILL",
        &attempts,
        lost.len(),
        &[("kill -9 store0 (the primary)", killed_at, until)],
    );
    println!(
        "test time: {:.1} s after the build and start ({:.1} s in all)",
        after_build.elapsed().as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );

    assert_served_throughout(&attempts, &lost, &[("the kill", killed_at, until)], until);
}
