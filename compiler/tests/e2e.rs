//! End to end: `ovidc run` on the examples, as a user runs it, checking what they print.
//!
//! The generated crates share one target directory (`target/e2e`), so their dependencies
//! compile once; it is not the workspace's own, which the running `cargo test` holds locked.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("inside the workspace")
        .to_path_buf()
}

/// webkvs's boxes listen on fixed ports: its tests take turns.
static WEBKVS_PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ovidc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ovidc"));
    c.current_dir(root())
        .env("CARGO_TARGET_DIR", root().join("target/e2e"))
        .env_remove("RUST_LOG");
    c
}

/// Runs `ovidc run FILE` to completion (the clients finish), within a generous time limit
/// (the first run compiles the dependencies).
fn run_to_end(file: &str) -> Output {
    let child = ovidc()
        .args(["run", file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ovidc starts");
    wait_with_limit(child, Duration::from_secs(600))
}

fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "did not finish in time:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// No warning from compiling the generated crate (or anything else).
fn assert_no_warnings(stderr: &str) {
    assert!(
        !stderr.lines().any(|l| l.starts_with("warning")),
        "warnings while building:\n{stderr}"
    );
}

#[test]
fn literal_arithmetic_compiles_cleanly_and_computes_what_it_says() {
    let out = run_to_end("tests/ui/literals.ovid");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // a = 0 - 1 + -5; b = 6 - 12; c = 5 * 3 + 1 + 4; d = -4 + 7 / 0 (0); e = 1 + 255 wraps
    // in a U8; f = !(a == b) && ..; g = -2 * 3; r = random(1).
    let line = "[main] a -6 b -6 c 20 d -4 e 0 f false g -6 r 0";
    assert!(
        stdout.contains(line),
        "missing `{line}` in:\n{stdout}\n{stderr}"
    );
    assert_no_warnings(&stderr);
}

#[test]
fn names_rust_reserves_or_generated_code_uses_build_cleanly_and_run() {
    let out = run_to_end("tests/ui/names.ovid");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("[main] n 2"), "{stdout}\n{stderr}");
    assert_no_warnings(&stderr);
}

#[test]
fn two_files_declaring_one_system_name_each_run_their_own_code() {
    let dir = std::env::temp_dir().join(format!("ovid-same-name-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let program = |word: &str| {
        format!(
            "message Ping {{ n: Int }}\nmessage Pong {{ n: Int }}\n\
             agent Ponger {{ accepts Ping -> Pong; on Ping(p) {{ reply Pong {{ n: p.n }}; }} }}\n\
             agent Pinger {{ uses peer; on start {{ send peer Ping {{ n: 1 }}; }} \
             on Pong(p) {{ print(\"ran {word}\"); finish; }} }}\n\
             system Same {{ instance ponger: Ponger; instance pinger: Pinger {{ peer = ponger }}; }}\n"
        )
    };
    let (a, b) = (dir.join("a.ovid"), dir.join("b.ovid"));
    std::fs::write(&a, program("a")).unwrap();
    std::fs::write(&b, program("b")).unwrap();
    // Run after run, each file's binary runs its own code, never the other's.
    for (file, word) in [(&a, "a"), (&b, "b"), (&a, "a")] {
        let out = run_to_end(file.to_str().unwrap());
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("ran {word}")),
            "{} ran the other's code:\n{stdout}\n{stderr}",
            file.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kvs_prints_what_its_client_got() {
    let out = run_to_end("examples/kvs/kvs.ovid");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "[front] apple = apple pie",
        "[front] banana = banana pie",
        "[front] cherry = cherry pie",
    ] {
        assert!(
            stdout.contains(line),
            "missing `{line}` in:\n{stdout}\n{stderr}"
        );
    }
    assert!(stderr.contains("every client has finished"), "{stderr}");
    assert_no_warnings(&stderr);
}

#[test]
fn disk_writer_reads_back_every_block_from_the_primary_backup_disk() {
    let out = run_to_end("examples/disk/disk.ovid");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for b in 0..8 {
        let line = format!("[front] read {b} = block {b} of writer");
        assert!(
            stdout.contains(&line),
            "missing `{line}` in:\n{stdout}\n{stderr}"
        );
    }
    assert!(stderr.contains("every client has finished"), "{stderr}");
    assert_no_warnings(&stderr);
}

/// The primary-backup disk, simulated with every fault (its boxes crash, the primary's too, and
/// the controller's view service fails over): linearizable against `BlockDisk` itself.
#[test]
fn ovidc_test_checks_the_primary_backup_disk_under_crashes() {
    let out = wait_with_limit(
        ovidc()
            .args([
                "test",
                "examples/disk/disk.ovid",
                "--seeds",
                "30",
                "--faults",
                "all",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(600),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("disk: 30 seeds") && stdout.contains("crashes") && stdout.contains("PASS"),
        "{stdout}"
    );
}

#[test]
fn pipeline_adds_up_through_workers_batches_and_a_python_agent() {
    let out = run_to_end("examples/pipeline/pipeline.ovid");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[edge] sum of squares: 385 from 10 results; 10 recorded"),
        "{stdout}\n{stderr}"
    );
    assert_no_warnings(&stderr);
}

#[test]
fn lockservice_clients_take_turns() {
    let out = run_to_end("examples/lockservice/lockservice.ovid");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for c in 0..3 {
        assert!(
            stdout.contains(&format!("client[{c}] holds printer")),
            "client[{c}] never held the lock:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains(&format!("client[{c}] released printer")),
            "client[{c}] never released it:\n{stdout}\n{stderr}"
        );
    }
    assert_no_warnings(&stderr);
}

/// `ovidc run --data-dir DIR`: each replica box keeps its replica proxy's Paxos log in
/// `DIR/<box>`; a second run with the same directory starts from those logs (the lock service's
/// replicas restore the first run's log and go on from it) and the clients finish again.
#[test]
fn lockservice_runs_again_from_its_data_directory() {
    let dir = root().join("target/e2e/ovid-data-lockservice");
    let _ = std::fs::remove_dir_all(&dir);
    let log = dir.join("replica0").join("locks%2FReplicaProxy0.log");
    let mut sizes = Vec::new();
    for run in 0..2 {
        let child = ovidc()
            .args(["run", "examples/lockservice/lockservice.ovid", "--data-dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ovidc starts");
        let out = wait_with_limit(child, Duration::from_secs(600));
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "run {run}: {stdout}\n{stderr}");
        for c in 0..3 {
            assert!(
                stdout.contains(&format!("client[{c}] released printer")),
                "run {run}: client[{c}] never released the lock:\n{stdout}\n{stderr}"
            );
        }
        let size = std::fs::metadata(&log)
            .unwrap_or_else(|e| panic!("run {run}: no log at {}: {e}", log.display()))
            .len();
        sizes.push(size);
    }
    assert!(
        sizes[1] > sizes[0],
        "the second run appended to the first run's log: {sizes:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The process that `parent` started as controller replica `index` (its command line is
/// `<system> controller --replica <index> --controllers …`).
fn controller_replica_of(parent: u32, index: &str) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The parent's pid is the second field after the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.get(1).map(String::as_str) == Some("controller")
            && args
                .windows(2)
                .any(|w| w[0] == "--replica" && w[1] == index)
        {
            return Some(pid);
        }
    }
    None
}

#[test]
fn ha_kvs_clients_finish_when_the_leading_controller_is_killed() {
    // `controller |> replicate(3)`: `ovidc run` starts three controller processes. As soon as
    // one says it leads (the boxes are registering), it is killed with SIGKILL; the other two
    // elect a leader, the boxes ask them again, and both clients still read back every key.
    use std::io::BufRead;
    let mut child = ovidc()
        .args(["run", "examples/ha-kvs/ha-kvs.ovid"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ovidc starts");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut killed = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if killed.is_none()
            && let Some(index) = line
                .split("ovid: controller replica ")
                .nth(1)
                .and_then(|rest| rest.strip_suffix(" leads"))
        {
            let pid = controller_replica_of(child.id(), index)
                .unwrap_or_else(|| panic!("no process for controller replica {index}"));
            // A process our child started, found by its parent's pid.
            signal(pid, nix::sys::signal::Signal::SIGKILL);
            killed = Some(index.to_string());
        }
        seen.push(line);
    }
    let out = wait_with_limit(child, Duration::from_secs(60));
    let (_, stderr) = text(&out);
    let stdout = seen.join("\n");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let killed = killed.expect("a controller replica said it leads");
    assert!(
        stderr.contains(&format!("controller replica `controller{killed}` stopped")),
        "ovidc did not notice the killed replica:\n{stderr}"
    );
    for c in 0..2 {
        assert!(
            stdout.contains(&format!("client[{c}] read back 100 of 100")),
            "client[{c}] did not read back every key:\n{stdout}\n{stderr}"
        );
    }
    assert_no_warnings(&stderr);
    // With --nocapture: who led, who was killed, who took over.
    println!("{stdout}\n{stderr}");
}

/// One HTTP/1.0 exchange: the status code and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
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

fn interrupt(child: &Child) {
    let pid = i32::try_from(child.id()).expect("a pid fits an i32");
    signal(pid, nix::sys::signal::Signal::SIGINT);
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .unwrap_or_else(|e| panic!("{signal} to {pid}: {e}"));
}

#[test]
fn webkvs_answers_http_puts_and_gets() {
    let _turn = WEBKVS_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = ovidc()
        .args(["run", "examples/webkvs/webkvs.ovid"])
        .env("WEBKVS_ADDR", &addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ovidc starts");
    // Wait for the front end (the first run compiles the generated crate).
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seeded = false;
    while Instant::now() < deadline {
        if let Ok((200, body)) = http(&addr, "GET", "/index", "") {
            assert_eq!(body, "<h1>index</h1>", "the seeder stored the home page");
            seeded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let result = std::panic::catch_unwind(|| {
        assert!(seeded, "webkvs never served the seeded page on {addr}");
        assert_eq!(
            http(&addr, "PUT", "/apple", "apple pie").unwrap(),
            (200, "stored apple".to_string())
        );
        assert_eq!(
            http(&addr, "GET", "/apple", "").unwrap(),
            (200, "apple pie".to_string())
        );
        assert_eq!(http(&addr, "GET", "/pear", "").unwrap().0, 404);
        for i in 0..20 {
            let key = format!("/k{i}");
            assert_eq!(http(&addr, "PUT", &key, &format!("v{i}")).unwrap().0, 200);
            assert_eq!(
                http(&addr, "GET", &key, "").unwrap(),
                (200, format!("v{i}"))
            );
        }
    });
    interrupt(&child);
    let out = wait_with_limit(child, Duration::from_secs(30));
    let (stdout, stderr) = text(&out);
    if let Err(e) = result {
        eprintln!("{stdout}\n{stderr}");
        std::panic::resume_unwind(e);
    }
    assert!(
        out.status.success(),
        "Ctrl-C stops webkvs cleanly:\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("ovidc: stopping"), "{stderr}");
    assert_no_warnings(&stderr);
}

#[test]
fn a_port_in_use_is_named() {
    // webkvs's box `front` listens on 127.0.0.1:7000; hold it. (The other examples choose
    // free ports.)
    let _turn = WEBKVS_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let _held =
        std::net::TcpListener::bind("127.0.0.1:7000").expect("port 7000 is free for the test");
    let out = ovidc()
        .args(["run", "examples/webkvs/webkvs.ovid"])
        .env("WEBKVS_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("127.0.0.1:7000: the port is in use"),
        "{stderr}"
    );
    assert!(
        stderr.contains("box `front` stopped unexpectedly"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let out = ovidc()
        .args(["run", "examples/nope/nope.ovid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read `examples/nope/nope.ovid`"),
        "{stderr}"
    );
}

#[test]
fn ovidc_test_checks_the_sharded_replicated_store_under_faults() {
    let out = ovidc()
        .args([
            "test",
            "examples/webkvs/webkvs.ovid",
            "--seeds",
            "20",
            "--faults",
            "delay,reorder,crash,partition",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ovidc starts");
    let out = wait_with_limit(out, Duration::from_secs(600));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("KVS: 20 seeds"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn ovidc_test_checks_every_example_target() {
    for (file, target) in [
        ("examples/kvs/kvs.ovid", "KVS"),
        ("examples/lockservice/lockservice.ovid", "locks"),
        ("examples/pipeline/pipeline.ovid", "workers"),
    ] {
        let out = wait_with_limit(
            ovidc()
                .args(["test", file, "--seeds", "10"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            Duration::from_secs(600),
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{file}: {stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("{target}: 10 seeds")) && stdout.contains("PASS"),
            "{file}: {stdout}"
        );
    }
}

#[test]
fn ovidc_test_catches_a_broken_transformation_and_its_report_reproduces() {
    // The shard ingress proxies deliberately send every other message to the wrong shard.
    let run = |args: &[&str]| {
        let child = ovidc()
            .args(["test", "examples/kvs/kvs.ovid"])
            .args(args)
            .env("OVID_INJECT_FAULT", "shard-misroute")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_with_limit(child, Duration::from_secs(600));
        let (stdout, stderr) = text(&out);
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = run(&["--seeds", "20"]);
    assert_eq!(
        code,
        Some(1),
        "the broken shard must fail:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("KVS: FAIL at seed"), "{stdout}");
    assert!(stdout.contains("linearizability violated"), "{stdout}");
    // The report's replay line reproduces the same failure.
    let replay = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay:"))
        .expect("a replay line")
        .trim();
    let replay = replay
        .split("--replay")
        .nth(1)
        .expect("a --replay argument")
        .trim()
        .trim_matches('\'');
    let (code2, stdout2, stderr2) = run(&["--replay", replay]);
    assert_eq!(code2, Some(1), "{stdout2}\n{stderr2}");
    let first_line = |s: &str| {
        s.lines()
            .find(|l| l.contains("FAIL"))
            .unwrap_or_default()
            .split(" (")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        first_line(&stdout),
        first_line(&stdout2),
        "same seed, same failure"
    );
    // Without the fault, the same seeds pass.
    let out = wait_with_limit(
        ovidc()
            .args(["test", "examples/kvs/kvs.ovid", "--seeds", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(600),
    );
    assert!(out.status.success(), "{}", text(&out).0);
}

#[test]
fn ovidc_test_checks_every_transformation_and_a_nested_pipeline() {
    // Keys for the encrypted channels, never in source.
    let key = "5a".repeat(32);
    for (file, targets) in [
        (
            "tests/ui/every_transformation.ovid",
            &["KVS", "Backup", "Disk", "Workers"][..],
        ),
        ("tests/ui/nested_pipeline.ovid", &["KVS"][..]),
        // `me()` inside a copy is what the copy stands for, so copies answer as the original.
        ("tests/ui/identity.ovid", &["workers", "store"][..]),
        // A pipeline on a channel only: the agent behind the channel's proxies.
        ("tests/ui/channel.ovid", &["store"][..]),
    ] {
        for target in targets {
            let child = ovidc()
                .args([
                    "test", file, "--seeds", "10", "--faults", "all", "--target", target,
                ])
                .env("KVS_KEY", &key)
                .env("OVID_KEY", &key)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let out = wait_with_limit(child, Duration::from_secs(600));
            let (stdout, stderr) = text(&out);
            assert!(out.status.success(), "{file} {target}: {stdout}\n{stderr}");
            assert!(
                stdout.contains(&format!("{target}: 10 seeds")) && stdout.contains("PASS"),
                "{file}: {stdout}"
            );
        }
    }
}
