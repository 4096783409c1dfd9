//! `chain(3)` as real processes (examples/webkvs/webkvs-chain.ovid: one chain member per storage
//! box, the controller in a process of its own, all on loopback at free ports). Under a write
//! load over HTTP the head's box (store0: member 0 heads the first view) is killed with SIGKILL,
//! then the tail's box (store2). Each time the controller's failure detector declares the box
//! dead and the view service closes the chain around it: after the first kill member 1 heads and
//! member 2 answers, after the second member 1 is head and tail alone. Every acknowledged write
//! must still be readable with its value, and the service must go on. Last, store0 is started
//! again with nothing: its member catches up from the head and the controller adds it back.
//!
//! `cargo test -p ovidc --test chain_faults -- --nocapture` prints the figures.

#[path = "../../tests/docker/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::*;

#[test]
fn chain_survives_killing_the_head_then_the_tail_and_a_member_rejoins() {
    let test_started = Instant::now();
    let bin = build_example(
        env!("CARGO_BIN_EXE_ovidc"),
        "chain-faults",
        "examples/webkvs/webkvs-chain.ovid",
    );
    let names = ["store0", "store1", "store2", "front"];
    let ports = free_ports(names.len() + 2);
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let (controller, web) = (addr(0), addr(names.len() + 1));
    let mut p = Processes::new(root().join("target/chain-faults/logs"));
    let ready_within = Duration::from_secs(30);
    let args = ["controller", "--listen", &controller];
    p.start("controller", &bin, &args, &[]);
    p.wait_for("controller", "controller listening", ready_within);
    for (i, name) in names.iter().enumerate() {
        let listen = addr(i + 1);
        let args = [
            "box",
            name,
            "--controller",
            &controller,
            "--listen",
            &listen,
        ];
        let env = [("WEBKVS_ADDR", web.as_str())];
        p.start(name, &bin, &args, &env);
        p.wait_for(name, &format!("box {name} listening"), ready_within);
    }
    let ready = wait_until_serving(&web, Duration::from_secs(60));
    println!(
        "webkvs-chain serving on {web}, {} ms after the boxes started",
        ready.as_millis()
    );
    let after_start = Instant::now();

    let load = Load::start(&web, "chain");
    std::thread::sleep(Duration::from_secs(2));
    let head_killed = load.now();
    p.kill("store0");
    println!(
        "killed store0, the head's box (SIGKILL), at {:.2} s",
        head_killed.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(5));
    let tail_killed = load.now();
    p.kill("store2");
    println!(
        "killed store2, the tail's box (SIGKILL), at {:.2} s",
        tail_killed.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(4));
    // store0 comes back empty: its member joins the head, catches up, and is added again.
    let restarted = load.now();
    let listen = addr(1);
    let args = [
        "box",
        "store0",
        "--controller",
        &controller,
        "--listen",
        &listen,
    ];
    let env = [("WEBKVS_ADDR", web.as_str())];
    p.start("store0", &bin, &args, &env);
    p.wait_for("store0", "box store0 listening", ready_within);
    println!("restarted store0 at {:.2} s", restarted.as_secs_f64());
    std::thread::sleep(Duration::from_secs(5));
    let until = load.now();
    let attempts = load.finish();
    p.check_alive(&["store2"]);

    let controller_log = p.log("controller");
    assert!(
        controller_log.contains("box declared dead")
            && controller_log.contains("the primary failed"),
        "the controller did not replace the head:\n{}",
        tail(&p.latest("controller").2, 30)
    );
    assert!(
        controller_log.contains("a backup failed"),
        "the controller did not drop the tail:\n{}",
        tail(&p.latest("controller").2, 30)
    );

    assert!(
        controller_log.contains("a backup caught up"),
        "the restarted member was not added back:\n{}",
        tail(&p.latest("controller").2, 30)
    );

    let lost = lost_writes(&web, &attempts);
    let phases = [
        ("kill -9 store0 (the head)", head_killed, tail_killed),
        ("kill -9 store2 (the tail)", tail_killed, restarted),
        ("restart of store0 (rejoins)", restarted, until),
    ];
    print_figures(
        "chain(3) as processes, the head's box then the tail's killed with SIGKILL, store0 restarted",
        &attempts,
        lost.len(),
        &phases,
    );
    println!(
        "test time: {:.1} s after the build and start ({:.1} s in all)",
        after_start.elapsed().as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );
    assert_served_throughout(&attempts, &lost, &phases, until);
}
