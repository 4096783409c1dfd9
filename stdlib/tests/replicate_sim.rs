//! `replicate(n)`'s real proxies under the runtime's deterministic simulator: seeded message
//! delays and reordering, partitions, pauses, and crashes of replica boxes. Every client history
//! must be linearizable against the store alone, each request must get one reply, and at
//! quiescence the refinement mapping (the transformation's own `merge`) must give a state the store
//! reaches.
//!
//! A crashed box loses its memory but, by default, not its disk: each replica proxy restarts
//! with the acceptor state it synced to its durable store, so even crashes of every replica in
//! turn (`churn`) lose nothing, and every operation is answered. With `amnesia` the disks go too
//! (boxes without a data directory): a restarted replica has lost its memory until it has
//! recovered from its peers, so with churn, or with a replica still recovering (a slow link can
//! keep it from its peers) when another crashes, more than f memories can be lost: the log may be
//! gone, and replicate stops rather than answer from less (docs/replication.md). Such runs end
//! with operations never answered, or, if the log is gone, a refinement failure; never a wrong
//! answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use ovid::{BoxBuilder, Context, Error, Message, Payload};
use ovid_sim::System;
use ovid_sim::{Faults, Options, Property, Rng, Target, test_system};
use ovid_stdlib::expansion::{Args, Request, Role, Value};
use ovid_stdlib::proxy::{Hooks, NoHooks};
use serde::{Deserialize, Serialize};

use ovid_stdlib::replicate as transform;

const TRANSFORM: &str = "replicate";
const PROXY: &str = "ReplicaProxy";
const COPY: &str = "Replica";
const BOX: &str = "r";
const NAME: &str = "replicated store";

include!("support/simulated_store.rs");

#[test]
fn without_faults() {
    run(
        3,
        Options {
            seeds: 10,
            clients: 3,
            faults: Faults::none(),
            ..Options::default()
        },
    );
}

#[test]
fn under_delays_reordering_partitions_and_pauses() {
    run(
        3,
        Options {
            seeds: 20,
            clients: 3,
            faults: Faults::parse("delay,reorder,partition,pause").unwrap(),
            ..Options::default()
        },
    );
}

#[test]
fn with_crashes_and_restarts_from_disk() {
    run(
        3,
        Options {
            seeds: 30,
            clients: 3,
            faults: Faults::parse("crash").unwrap(),
            ..Options::default()
        },
    );
}

#[test]
fn with_crashes_and_amnesiac_restarts() {
    run(
        3,
        Options {
            seeds: 30,
            clients: 3,
            faults: Faults::parse("crash,amnesia").unwrap(),
            ..Options::default()
        },
    );
}

#[test]
fn under_every_fault() {
    run(
        3,
        Options {
            seeds: 30,
            clients: 3,
            faults: Faults::all(),
            ..Options::default()
        },
    );
}

#[test]
fn under_every_fault_without_disks() {
    run(
        3,
        Options {
            seeds: 30,
            clients: 3,
            faults: Faults::parse("all,amnesia").unwrap(),
            ..Options::default()
        },
    );
}

#[test]
fn five_replicas_under_every_fault_and_amnesiac_churn() {
    run(
        5,
        Options {
            seeds: 10,
            clients: 3,
            faults: Faults::parse("all,churn,amnesia").unwrap(),
            ..Options::default()
        },
    );
}

/// Churn crashes every replica in turn; with durable stores none of them forgets what it
/// promised or accepted, so nothing is lost and the system never stops: every run passes, and
/// every operation of every run is answered (liveness, which the simulator does not check by
/// itself).
#[test]
fn churn_with_durable_stores_loses_nothing_and_answers_everything() {
    for n in [3, 5] {
        let options = Options {
            seeds: 30,
            clients: 3,
            faults: Faults::parse("all,churn").unwrap(),
            ..Options::default()
        };
        let r = test_system(&system(n), &options).expect("the simulator runs");
        let text = r.render(NAME);
        println!("{text}");
        assert!(r.passed(), "{text}");
        let t = &r.targets[0];
        assert!(t.injected[0] > 0, "crashes were injected: {text}");
        assert_eq!(t.unanswered, 0, "every operation answered: {text}");
    }
}

/// The run in which three replicas without disks lose the log (seed 9 of the test below, with
/// every fault and churn): without disks, replicas crash in turn, each before the one before it
/// has recovered, and the run loses state or stops answering. With disks, the same seed (the
/// crashes it draws fall differently, as the replicas answer differently) loses nothing, and
/// every operation is answered.
#[test]
fn the_run_that_loses_an_amnesiac_log_loses_nothing_with_disks() {
    let options = |faults: &str| Options {
        seeds: 1,
        seed: Some(9),
        clients: 3,
        faults: Faults::parse(faults).unwrap(),
        shrink: false,
        ..Options::default()
    };
    let amnesiac = test_system(&system(3), &options("all,churn,amnesia")).unwrap();
    let text = amnesiac.render(NAME);
    let t = &amnesiac.targets[0];
    assert!(
        t.failure.is_some() || t.unanswered > 0,
        "without disks this run loses the log: {text}"
    );
    if let Some(f) = &t.failure {
        assert_eq!(
            f.property,
            Property::Refinement,
            "never a wrong answer: {text}"
        );
    }
    let durable = test_system(&system(3), &options("all,churn")).unwrap();
    let text = durable.render(NAME);
    println!("{text}");
    assert!(durable.passed(), "{text}");
    assert!(durable.targets[0].injected[0] >= 2, "crashes: {text}");
    assert_eq!(durable.targets[0].unanswered, 0, "{text}");
}

/// Five replicas, one restarted from its disk (seed 33 of five replicas under every fault and
/// churn, shrunk): in omnipaxos's fail-recovery it asks the leader to prepare it more than once,
/// and the answer to its first promise overtakes a later `Prepare`; applied, that stale
/// `AcceptSync` would rewrite entries it knows are decided (omnipaxos asserts against it, and
/// the proxy panicked). The proxy drops it and waits for the answer to its latest promise.
#[test]
fn a_stale_accept_sync_after_a_restart_from_disk_is_dropped() {
    let scenario = ovid_sim::Scenario::parse_replay(
        "target=KVS;seed=33;ops=19;clients=3;faults=delay,reorder,crash,partition,pause;\
         events=partition(r0|r1|r2|r4)@1+794ms,pause(rteIngressProxy0)@2+280ms,pause(r0)@4+90ms,\
         partition(r0|r1|r3|front)@11+956ms,pause(r0)@11+50ms,crash(r3)@17+19ms",
    )
    .unwrap();
    let out = ovid_sim::run_scenario(&system(5), &scenario, false).unwrap();
    assert_eq!(out.violation, None);
    assert_eq!(out.ops, 19);
}

/// Churn without disks crashes more replicas of a run than f: three replicas can then all lose
/// their memory before one has recovered. The log is gone and replicate stops; the simulator may
/// report the lost state (refinement), but never a wrong answer.
#[test]
fn amnesiac_churn_beyond_f_may_lose_state_but_never_answers_wrong() {
    let options = Options {
        seeds: 20,
        clients: 3,
        faults: Faults::parse("all,churn,amnesia").unwrap(),
        ..Options::default()
    };
    let r = test_system(&system(3), &options).expect("the simulator runs");
    let text = r.render("replicated store");
    println!("{text}");
    if let Some(f) = &r.targets[0].failure {
        assert_eq!(f.property, Property::Refinement, "{text}");
    }
}

#[test]
fn one_replica() {
    run(
        1,
        Options {
            seeds: 10,
            clients: 3,
            faults: Faults::parse("delay,reorder").unwrap(),
            ..Options::default()
        },
    );
}

/// More seeds, by hand: `SEEDS=500 FAULTS=crash,delay N=3 cargo test -p ovid-stdlib --test
/// replicate_sim soak -- --ignored --nocapture`.
#[test]
#[ignore]
fn soak() {
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let options = Options {
        seeds: var("SEEDS", "200").parse().unwrap(),
        clients: var("CLIENTS", "3").parse().unwrap(),
        faults: Faults::parse(&var("FAULTS", "all")).unwrap(),
        seed: std::env::var("SEED").ok().map(|s| s.parse().unwrap()),
        trace: std::env::var("TRACE").is_ok(),
        ..Options::default()
    };
    if options.trace {
        let r = test_system(&system(var("N", "3").parse().unwrap()), &options)
            .expect("the simulator runs");
        println!("{}", r.render("replicated store"));
        return;
    }
    run(var("N", "3").parse().unwrap(), options);
}

/// Prints the trace of one run: `REPLAY='target=KVS;seed=...' [N=5] cargo test -p ovid-stdlib
/// --test replicate_sim trace -- --ignored --nocapture`.
#[test]
#[ignore]
fn trace() {
    let replay = std::env::var("REPLAY").expect("REPLAY");
    let scenario = ovid_sim::Scenario::parse_replay(&replay).unwrap();
    let n = std::env::var("N").map_or(3, |n| n.parse().unwrap());
    let out = ovid_sim::run_scenario(&system(n), &scenario, true).unwrap();
    for line in &out.trace {
        println!("{line}");
    }
    println!("{:?}", out.violation);
}
