//! A fault test with containers: examples/webkvs (sharded two ways, every shard replicated three
//! ways) with the controller and every box in a container of its own, on a private Docker
//! network with a fixed subnet and fixed addresses. The image is built FROM scratch from the
//! binary compiled here (tests/docker/image.sh: nothing is pulled). A client load writes over
//! HTTP through the published port of the front box while
//!
//! 1. a storage container holding a replica leader is cut off (`docker network disconnect`):
//!    the other two go on as a majority;
//! 2. it is connected again (`docker network connect`, same address): it catches up;
//! 3. another storage container holding a leader is killed (`docker kill`): now the majority is
//!    the one that was cut off and the third, so it must have caught up.
//!
//! Every acknowledged write must be readable with its value at the end.
//!
//! A second test does the same for examples/webkvs/webkvs-ha.ovid (`primary_backup(3)` under a
//! controller replicated three ways, each replica in a container): the leading controller
//! replica is killed, then the primary's container is cut off, and the surviving replicas fail
//! the store over to a backup. The tests run one at a time (they share the subnet).
//! `cargo test -p ovidc --test docker -- --nocapture` prints the figures (docs/operations.md).
//! Without a usable `docker` the test says so and passes, unless `$CI` is set.

#[path = "../../tests/docker/harness.rs"]
mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::*;

/// The label on everything this test creates, so a run can clear what a killed run left.
const LABEL: &str = "ovid.test=webkvs-docker";
/// The private network: a fixed subnet, fixed addresses.
const SUBNET: &str = "172.29.77.0/24";
const CONTROLLER_IP: &str = "172.29.77.10";
/// Every box listens on this port at its own address.
const BOX_PORT: u16 = 7000;
const CONTROLLER_PORT: u16 = 7070;
/// webkvs's HTTP port inside the front container.
const HTTP_PORT: u16 = 8080;
const BOXES: [(&str, &str); 5] = [
    ("store0", "172.29.77.30"),
    ("store1", "172.29.77.31"),
    ("store2", "172.29.77.32"),
    ("routing", "172.29.77.21"),
    ("front", "172.29.77.20"),
];

/// The tests share the subnet and clear each other's leftovers: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// This test's turn with Docker (the tests run one at a time); `None` if Docker is not usable
/// here, which fails the test in CI (`$CI` set) and skips it elsewhere.
fn docker_turn() -> Option<std::sync::MutexGuard<'static, ()>> {
    if let Err(why) = docker_usable() {
        assert!(
            std::env::var_os("CI").is_none(),
            "docker is not usable in CI: {why}"
        );
        println!("skipped: docker is not usable here: {why}");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Whether this user can talk to a Docker daemon; why not, if not.
fn docker_usable() -> Result<(), String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(format!("cannot run docker: {e}")),
    }
}

/// Removes containers and networks a killed earlier run left (they hold the fixed subnet).
fn clear_leftovers() {
    let containers = docker(&["ps", "-aq", "--filter", &format!("label={LABEL}")]);
    for id in containers.split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
    let networks = docker(&["network", "ls", "-q", "--filter", &format!("label={LABEL}")]);
    for id in networks.split_whitespace() {
        let _ = Command::new("docker").args(["network", "rm", id]).output();
    }
}

/// What one run created; all removed when dropped (containers, then the network, then the
/// image), and on a panic the end of every container's log is printed first.
struct Deployment {
    prefix: String,
    image: Option<String>,
    network: Option<String>,
    containers: Vec<String>,
    /// The short names of the containers, for their logs on a failure.
    names: Vec<String>,
}

impl Deployment {
    /// Clears what a killed run left, builds the image of `bin` (FROM scratch) and creates the
    /// private network, both named `<name>-<pid>`.
    fn create(name: &str, bin: &std::path::Path) -> Deployment {
        clear_leftovers();
        let prefix = format!("{name}-{}", std::process::id());
        let mut d = Deployment {
            prefix: prefix.clone(),
            image: None,
            network: None,
            containers: Vec::new(),
            names: Vec::new(),
        };
        let image = format!("{prefix}:test");
        let script = root().join("tests/docker/image.sh");
        run(Command::new("sh").arg(&script).arg(bin).arg(&image));
        d.image = Some(image.clone());
        docker(&["image", "inspect", &image, "--format", "{{.Size}}"]);
        docker(&[
            "network", "create", "--subnet", SUBNET, "--label", LABEL, &prefix,
        ]);
        d.network = Some(prefix);
        d
    }

    fn container(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// `docker run -d` of one part of the system at a fixed address.
    fn start(&mut self, name: &str, ip: &str, extra: &[&str], command: &[&str]) {
        let container = self.container(name);
        let (image, network) = (self.image.clone().unwrap(), self.network.clone().unwrap());
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &container,
            "--label",
            LABEL,
            "--network",
            &network,
            "--ip",
            ip,
        ];
        args.extend(["-e", "RUST_LOG=info"]);
        args.extend(extra.iter().copied());
        args.push(&image);
        args.extend(command);
        docker(&args);
        self.containers.push(container);
        self.names.push(name.to_string());
    }

    /// `docker run`s every box of `boxes` (name, address) at its address, talking to the
    /// controller at `controller` (every replica's, comma-separated); the front box publishes
    /// webkvs's HTTP port on a free port of 127.0.0.1, which it returns.
    fn start_boxes(&mut self, boxes: &[(&str, &str)], controller: &str) -> u16 {
        let http_port = free_port();
        let publish = format!("127.0.0.1:{http_port}:{HTTP_PORT}");
        let webkvs_addr = format!("WEBKVS_ADDR=0.0.0.0:{HTTP_PORT}");
        for (name, ip) in boxes {
            let listen = format!("{ip}:{BOX_PORT}");
            let extra: Vec<&str> = if *name == "front" {
                vec!["-p", &publish, "-e", &webkvs_addr]
            } else {
                vec![]
            };
            self.start(
                name,
                ip,
                &extra,
                &["box", name, "--controller", controller, "--listen", &listen],
            );
        }
        http_port
    }

    fn logs(&self, name: &str) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.container(name)])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn wait_for(&self, name: &str, text: &str, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.logs(name).contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{name} did not print `{text}` within {limit:?}:\n{}",
            self.logs(name)
        );
    }

    fn running(&self, name: &str) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.container(name)]) == "true"
    }

    /// CPU time the container's main process has used, in clock ticks (0 if the daemon's
    /// processes are not visible from here).
    fn cpu_ticks(&self, name: &str) -> u64 {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &self.container(name)]);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        get(11) + get(12)
    }

    /// Of `candidates`, the storage container holding a replica leader: the one that uses the
    /// most CPU over `window` of write load (a shard's leader takes every request, sends each
    /// entry to both followers and answers; a follower only acknowledges). The replica proxies
    /// do not log who leads. The first candidate if nothing is measurable.
    fn busiest(&self, candidates: &[&'static str], window: Duration) -> &'static str {
        let before: Vec<u64> = candidates.iter().map(|c| self.cpu_ticks(c)).collect();
        std::thread::sleep(window);
        let used: Vec<u64> = candidates
            .iter()
            .zip(before)
            .map(|(c, b)| self.cpu_ticks(c).saturating_sub(b))
            .collect();
        let shown: Vec<String> = candidates
            .iter()
            .zip(&used)
            .map(|(c, u)| format!("{c} {u}"))
            .collect();
        println!(
            "CPU ticks used over {window:?} of load: {}",
            shown.join(", ")
        );
        let best = (0..candidates.len())
            .max_by_key(|i| (used[*i], std::cmp::Reverse(*i)))
            .unwrap();
        candidates[best]
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in &self.names {
                let logs = self.logs(name);
                let lines: Vec<&str> = logs.lines().collect();
                eprintln!(
                    "---- end of {name}'s log:\n{}",
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
        }
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        if let Some(n) = &self.network {
            let _ = Command::new("docker").args(["network", "rm", n]).output();
        }
        if let Some(i) = &self.image {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

#[test]
fn webkvs_in_containers_survives_a_partition_and_a_kill() {
    let Some(_serial) = docker_turn() else {
        return;
    };
    let test_started = Instant::now();
    let bin = build_webkvs(env!("CARGO_BIN_EXE_ovidc"), "docker");
    let after_build = Instant::now();
    let mut d = Deployment::create("ovid-webkvs", &bin);

    let controller = format!("{CONTROLLER_IP}:{CONTROLLER_PORT}");
    d.start(
        "controller",
        CONTROLLER_IP,
        &[],
        &["controller", "--listen", &controller],
    );
    d.wait_for(
        "controller",
        "controller listening",
        Duration::from_secs(30),
    );
    let http_port = d.start_boxes(&BOXES, &controller);
    for (name, _) in BOXES {
        d.wait_for(
            name,
            &format!("box {name} listening"),
            Duration::from_secs(30),
        );
    }
    let http_addr = format!("127.0.0.1:{http_port}");
    let ready = wait_until_serving(&http_addr, Duration::from_secs(60));
    println!(
        "webkvs in containers serving on {http_addr}, {} ms after the boxes started",
        ready.as_millis()
    );

    let stores = ["store0", "store1", "store2"];
    let load = Load::start(&http_addr, "docker");
    std::thread::sleep(Duration::from_secs(1));
    let cut = d.busiest(&stores, Duration::from_secs(2));
    let (cut_ip, network) = (
        BOXES.iter().find(|(n, _)| *n == cut).unwrap().1,
        d.network.clone().unwrap(),
    );
    let cut_at = load.now();
    docker(&["network", "disconnect", &network, &d.container(cut)]);
    println!(
        "{cut} cut off (docker network disconnect) at {:.2} s",
        cut_at.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(5));
    let joined_at = load.now();
    let cut_log_lines = d.logs(cut).lines().count();
    docker(&[
        "network",
        "connect",
        "--ip",
        cut_ip,
        &network,
        &d.container(cut),
    ]);
    println!("{cut} connected again at {:.2} s", joined_at.as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));
    let others: Vec<&'static str> = stores.iter().copied().filter(|s| *s != cut).collect();
    let killed = d.busiest(&others, Duration::from_secs(2));
    let killed_at = load.now();
    docker(&["kill", &d.container(killed)]);
    println!(
        "{killed} killed (docker kill) at {:.2} s",
        killed_at.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(8));
    let until = load.now();
    let attempts = load.finish();
    for (name, _) in BOXES.iter().chain([&("controller", CONTROLLER_IP)]) {
        if *name != killed {
            assert!(
                d.running(name),
                "{name} stopped on its own:\n{}",
                d.logs(name)
            );
        }
    }

    let lost = lost_writes(&http_addr, &attempts);
    print_figures(
        &format!("webkvs in containers: {cut} cut off then connected again, then {killed} killed"),
        &attempts,
        lost.len(),
        &[
            (
                &format!("docker network disconnect {cut}"),
                cut_at,
                joined_at,
            ),
            (
                &format!("docker network connect {cut}"),
                joined_at,
                killed_at,
            ),
            (&format!("docker kill {killed}"), killed_at, until),
        ],
    );
    let cut_log = d.logs(cut);
    let new_lines: Vec<&str> = cut_log.lines().skip(cut_log_lines).collect();
    println!(
        "{cut}'s log after it was connected again ({} lines, the first 10):",
        new_lines.len()
    );
    for line in new_lines.iter().take(10) {
        println!("    {line}");
    }
    println!(
        "test time: {:.1} s after the build ({:.1} s in all)",
        after_build.elapsed().as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );

    assert_served_throughout(
        &attempts,
        &lost,
        &[
            ("the partition", cut_at, joined_at),
            ("the reconnection", joined_at, killed_at),
            ("the kill", killed_at, until),
        ],
        until,
    );
}

/// examples/webkvs/webkvs-ha.ovid in containers: the store kept by `primary_backup(3)`, the
/// controller by `replicate(3)`, each controller replica and each box in a container of its own.
/// Under an HTTP write load, the leading controller replica's container is killed, then the
/// primary's container is cut off the network: the surviving controller replicas elect a
/// leader, which declares the primary's box dead and makes a backup the primary. Every
/// acknowledged write must be readable at the end, and writes must go on after each fault.
#[test]
fn webkvs_primary_backup_fails_over_under_a_replicated_controller_in_containers() {
    let Some(_serial) = docker_turn() else {
        return;
    };
    let test_started = Instant::now();
    let bin = build_example(
        env!("CARGO_BIN_EXE_ovidc"),
        "docker",
        "examples/webkvs/webkvs-ha.ovid",
    );
    let after_build = Instant::now();
    let mut d = Deployment::create("ovid-webkvs-ha", &bin);

    const CONTROLLERS: [(&str, &str); 3] = [
        ("controller0", "172.29.77.10"),
        ("controller1", "172.29.77.11"),
        ("controller2", "172.29.77.12"),
    ];
    const PB_BOXES: [(&str, &str); 4] = [
        ("store0", "172.29.77.30"),
        ("store1", "172.29.77.31"),
        ("store2", "172.29.77.32"),
        ("front", "172.29.77.20"),
    ];
    let controllers: Vec<String> = CONTROLLERS
        .iter()
        .map(|(_, ip)| format!("{ip}:{CONTROLLER_PORT}"))
        .collect();
    let controllers = controllers.join(",");
    for (i, (name, ip)) in CONTROLLERS.iter().enumerate() {
        d.start(
            name,
            ip,
            &[],
            &[
                "controller",
                "--replica",
                &i.to_string(),
                "--controllers",
                &controllers,
            ],
        );
    }
    let http_port = d.start_boxes(&PB_BOXES, &controllers);
    let http_addr = format!("127.0.0.1:{http_port}");
    let ready = wait_until_serving(&http_addr, Duration::from_secs(60));
    println!(
        "webkvs-ha in containers serving on {http_addr}, {} ms after the boxes started",
        ready.as_millis()
    );

    let load = Load::start(&http_addr, "docker-ha");
    std::thread::sleep(Duration::from_secs(2));
    // The leader is the replica that said `leads` last (an election at start may name several
    // in turn); `docker logs --timestamps` dates each line (RFC 3339, UTC: they sort as text).
    let leader = CONTROLLERS
        .iter()
        .filter_map(|(name, _)| {
            let logs = docker(&["logs", "--timestamps", &d.container(name)]);
            let last = logs.lines().rev().find(|l| l.contains("leads"))?;
            Some((last.split_whitespace().next()?.to_string(), *name))
        })
        .max()
        .map(|(_, name)| name)
        .expect("a controller replica leads");
    let killed_at = load.now();
    docker(&["kill", &d.container(leader)]);
    println!(
        "{leader} (the leading controller replica) killed at {:.2} s",
        killed_at.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let network = d.network.clone().unwrap();
    let cut_at = load.now();
    docker(&["network", "disconnect", &network, &d.container("store0")]);
    println!(
        "store0 (the primary) cut off at {:.2} s",
        cut_at.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(6));
    let until = load.now();
    let attempts = load.finish();
    let lost = lost_writes(&http_addr, &attempts);
    print_figures(
        "webkvs-ha in containers: the leading controller replica killed, then the primary cut off",
        &attempts,
        lost.len(),
        &[
            (&format!("docker kill {leader}"), killed_at, cut_at),
            ("docker network disconnect store0", cut_at, until),
        ],
    );
    let new_leaders: Vec<&str> = CONTROLLERS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != leader && d.logs(name).contains("leads"))
        .collect();
    println!("controller replicas that led after the kill: {new_leaders:?}");
    println!(
        "test time: {:.1} s after the build ({:.1} s in all)",
        after_build.elapsed().as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );

    assert_served_throughout(
        &attempts,
        &lost,
        &[
            ("the controller's leader was killed", killed_at, cut_at),
            ("the primary was cut off", cut_at, until),
        ],
        until,
    );
}
