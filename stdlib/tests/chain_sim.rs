//! `chain(n)`'s real proxies under the runtime's deterministic simulator: seeded message delays
//! and reordering, crashes of a member's box (head, middle and tail: the simulator runs the
//! controller's view service and declares a crashed box dead, so the chain is repaired),
//! partitions and pauses. Every client history must be linearizable against the store alone,
//! each request must get one reply, and at quiescence the refinement mapping (the tail's state,
//! the transformation's own `merge`) must give a state the store reaches.

use std::collections::BTreeMap;
use std::sync::Arc;

use ovid::{BoxBuilder, Context, Error, Message, Payload};
use ovid_sim::System;
use ovid_sim::{Faults, Options, Rng, Target, test_system};
use ovid_stdlib::expansion::{Args, Request, Role, Value};
use ovid_stdlib::proxy::{Hooks, NoHooks};
use serde::{Deserialize, Serialize};

use ovid_stdlib::chain as transform;

const TRANSFORM: &str = "chain";
const PROXY: &str = "ChainProxy";
const COPY: &str = "Copy";
const BOX: &str = "c";
const NAME: &str = "chain store";

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

/// Crashes alone, with every operation answered: after a crash of any member (the head's and
/// the tail's included) the controller repairs the chain and service resumes (the simulator
/// does not check liveness, so this test does).
#[test]
fn crashes_repair_the_chain_and_service_resumes() {
    for n in [2, 3, 4] {
        let options = Options {
            seeds: 40,
            clients: 3,
            faults: Faults::parse("crash").unwrap(),
            ..Options::default()
        };
        let r = test_system(&system(n), &options).expect("the simulator runs");
        let text = r.render(NAME);
        println!("chain({n}): {text}");
        assert!(r.passed(), "{text}");
        let t = &r.targets[0];
        assert!(
            t.injected[0] >= 30,
            "too few crashes to mean anything: {text}"
        );
        assert_eq!(
            t.unanswered, 0,
            "service did not resume after a crash: {text}"
        );
    }
}

#[test]
fn two_members() {
    run(
        2,
        Options {
            seeds: 20,
            clients: 3,
            faults: Faults::all(),
            ..Options::default()
        },
    );
}

#[test]
fn five_members() {
    run(
        5,
        Options {
            seeds: 20,
            clients: 3,
            faults: Faults::all(),
            ..Options::default()
        },
    );
}
