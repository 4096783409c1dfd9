//! `primary_backup(n)`'s real proxies under the runtime's deterministic simulator: seeded message
//! delays and reordering, partitions and pauses. Every client history must be linearizable
//! against the store alone, each request must get one reply, and at quiescence the refinement
//! mapping ([`primary_backup::refine`]) must give a state the store reaches.
//!
//! The simulator crashes only the boxes of `replicate` nodes, so these runs have no crashes:
//! tests/primary_backup.rs crashes a backup and the primary on real boxes.

use std::collections::BTreeMap;
use std::sync::Arc;

use ovid::launch::System;
use ovid::sim::{Faults, Options, Rng, Target, test_system};
use ovid::{BoxBuilder, Context, Error, Message, Payload};
use ovid_stdlib::expansion::{Args, Request, Role, Value};
use ovid_stdlib::proxy::{Hooks, NoHooks};
use serde::{Deserialize, Serialize};

use ovid_stdlib::primary_backup as transform;

const TRANSFORM: &str = "primary_backup";
const PROXY: &str = "PrimaryBackupProxy";
const COPY: &str = "Copy";
const BOX: &str = "p";
const NAME: &str = "primary-backup store";

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
            seeds: 30,
            clients: 3,
            faults: Faults::all(),
            ..Options::default()
        },
    );
}

#[test]
fn two_copies() {
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
