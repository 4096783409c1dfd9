//! Unit tests of replicate's parts that need no box: the applier (exactly once, client order,
//! cached replies), the merge of acceptor states a recovering replica proxy adopts, and the
//! refinement mapping.

use std::collections::BTreeMap;

use omnipaxos::ballot_leader_election::Ballot;
use ovid_stdlib::replicate::messages::{Command, Reply};
use ovid_stdlib::replicate::{Applier, PaxosState, Step, virtual_state};

fn cmd(client: &str, seq: u64, ack: u64) -> Command {
    Command {
        client: client.into(),
        seq,
        ack,
        name: "Put".into(),
        bytes: vec![seq as u8],
    }
}

fn reply(s: &str) -> Reply {
    Reply {
        name: "PutOk".into(),
        bytes: s.as_bytes().to_vec(),
    }
}

fn tags(steps: &[Step]) -> Vec<u64> {
    steps
        .iter()
        .filter_map(|s| {
            if let Step::Execute { tag, .. } = s {
                Some(*tag)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn duplicates_run_once_and_get_the_first_reply() {
    let mut a = Applier::default();
    let mut out = Vec::new();
    a.apply(0, cmd("c", 0, 0), &mut out);
    assert_eq!(tags(&out), [1]);
    out.clear();
    a.apply(1, cmd("c", 0, 0), &mut out);
    assert!(out.is_empty(), "a duplicate before the reply: nothing yet");
    assert!(a.reply(1, reply("one"), &mut out));
    assert_eq!(
        out,
        [Step::Done {
            client: "c".into(),
            seq: 0,
            reply: Some(reply("one"))
        }]
    );
    out.clear();
    a.apply(2, cmd("c", 0, 0), &mut out);
    assert_eq!(
        out,
        [Step::Done {
            client: "c".into(),
            seq: 0,
            reply: Some(reply("one"))
        }]
    );
    assert_eq!(a.executed, 1);
}

#[test]
fn a_request_that_overtook_an_earlier_one_waits_for_it() {
    let mut a = Applier::default();
    let mut out = Vec::new();
    a.apply(0, cmd("c", 1, 0), &mut out);
    assert!(out.is_empty());
    assert!(a.seen("c", 1) && !a.seen("c", 0));
    a.apply(1, cmd("c", 0, 0), &mut out);
    assert_eq!(
        tags(&out),
        [2, 1],
        "seq 0 (index 1) runs first, then seq 1 (index 0)"
    );
    out.clear();
    assert!(a.reply(2, reply("zero"), &mut out));
    assert_eq!(
        out,
        [Step::Done {
            client: "c".into(),
            seq: 0,
            reply: Some(reply("zero"))
        }],
        "seq 1 (tag 1) still waits"
    );
    out.clear();
    assert!(a.reply(1, reply("one"), &mut out));
    assert_eq!(
        out,
        [Step::Done {
            client: "c".into(),
            seq: 1,
            reply: Some(reply("one"))
        }]
    );
}

#[test]
fn missing_replies_complete_when_a_later_reply_comes_and_acks_forget() {
    let mut a = Applier::default();
    let mut out = Vec::new();
    a.apply(0, cmd("c", 0, 0), &mut out);
    a.apply(1, cmd("c", 1, 0), &mut out);
    out.clear();
    assert!(a.reply(2, reply("two"), &mut out));
    assert_eq!(out.len(), 2);
    assert_eq!(a.known("c", 0), Some(None));
    assert_eq!(a.known("c", 1), Some(Some(reply("two"))));
    assert!(
        !a.reply(2, reply("again"), &mut out),
        "an extra reply is dropped"
    );
    a.apply(2, cmd("c", 2, 2), &mut out);
    assert_eq!(
        a.sessions["c"].outcomes.keys().copied().collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(a.completed(), 2);
}

fn entry(seq: u64) -> Command {
    Command {
        client: "c".into(),
        seq,
        ack: 0,
        name: "Put".into(),
        bytes: vec![seq as u8],
    }
}

fn ballot(n: u32, pid: u64) -> Ballot {
    Ballot::with(1, n, 0, pid)
}

#[test]
fn merge_takes_the_highest_promise_and_the_log_accepted_last() {
    let a = PaxosState {
        promise: Some(ballot(3, 1)),
        accepted_round: Some(ballot(2, 1)),
        log: vec![entry(0), entry(1)],
        decided: 2,
        ..Default::default()
    };
    let b = PaxosState {
        promise: Some(ballot(4, 2)),
        accepted_round: Some(ballot(4, 2)),
        log: vec![entry(0), entry(9), entry(8)],
        decided: 1,
        ..Default::default()
    };
    let m = PaxosState::merge([&a, &b]);
    assert_eq!(m.promise, Some(ballot(4, 2)));
    assert_eq!(m.accepted_round, Some(ballot(4, 2)));
    assert_eq!(m.log, b.log);
    assert_eq!(m.decided, 2);
    assert!(m.has_history());
    assert!(
        !PaxosState {
            promise: Some(ballot(1, 3)),
            ..Default::default()
        }
        .has_history()
    );
}

#[test]
fn the_virtual_state_is_the_replica_that_applied_most() {
    let none: [(u64, &str); 0] = [];
    assert_eq!(virtual_state(&none), None);
    assert_eq!(
        virtual_state(&[(3, "a"), (7, "b"), (7, "c"), (5, "d")]),
        Some(&"b")
    );
}

#[test]
fn the_mapping_reads_the_applied_index_from_the_proxy_snapshots() {
    use ovid::Agent;
    use ovid_stdlib::expansion::{Args, Value};
    use ovid_stdlib::refinement::{Copy, Merge, Parts};
    use ovid_stdlib::replicate::ReplicaProxy;

    let args = Args::from([
        ("index".to_string(), Value::Int(0)),
        (
            "peers".to_string(),
            Value::List(vec!["X/ReplicaProxy0".into()]),
        ),
        (
            "targets".to_string(),
            Value::List(vec!["X/Replica0".into()]),
        ),
    ]);
    let proxy = ReplicaProxy::from_config(&args).unwrap();
    let empty = proxy.snapshot().unwrap();
    assert_eq!(ovid_stdlib::replicate::applied(&empty).unwrap(), 0);
    let snapshots = BTreeMap::from([
        ("X/ReplicaProxy0".to_string(), empty),
        ("X/Replica0".to_string(), b"state".to_vec()),
        ("X/ReplicateIngressProxy0".to_string(), Vec::new()),
    ]);
    let replicate = ovid_stdlib::lookup("replicate").unwrap();
    let merge = |id: &'static str| {
        replicate.merge(Merge {
            id,
            args: &Args::new(),
            copies: vec![Copy {
                id: format!("{id}/Replica0"),
                state: Ok(Parts::new(b"state".to_vec())),
            }],
            snapshots: &snapshots,
        })
    };
    assert_eq!(merge("X").unwrap(), Parts::new(b"state".to_vec()));
    // No proxy of `Y` is up: no replica's progress is known.
    assert!(matches!(merge("Y"), Err(ovid::Error::DeadAgent(_))));
}
