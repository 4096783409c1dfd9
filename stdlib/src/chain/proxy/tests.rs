//! Three proxies and their copies driven by hand, message by message, with the controller
//! played by the test: writes go down the chain and the tail answers; the tail's failure
//! makes its predecessor answer; a restarted member is added once the chain has drained.

use std::collections::{BTreeSet, VecDeque};

use ovid::Effect;
use ovid::views::{AddBackup, Member, NewView};

use super::*;
use crate::expansion::Value;

/// A copy that counts the requests it was given and answers each with the count.
#[derive(Default)]
struct Counter(u64);

impl Agent for Counter {
    fn on_message(&mut self, ctx: &mut Context, _message: Payload) -> Result<(), Error> {
        self.0 += 1;
        ctx.reply(ChainStatus {
            index: self.0,
            position: Position::Tail,
            view: 0,
            log_len: 0,
            committed: 0,
            executed: 0,
            completed: 0,
            adding: None,
        });
        Ok(())
    }
}

const PEERS: [&str; 3] = ["KVS/ChainProxy0", "KVS/ChainProxy1", "KVS/ChainProxy2"];
const INGRESS: &str = "KVS/ChainIngressProxy0";

/// Proxies and copies by identifier, a FIFO of messages (from, to, tag, payload), agents
/// that are down, and what reached the ingress proxy and the controller.
struct Net {
    proxies: BTreeMap<String, (ChainProxy, Context)>,
    copies: BTreeMap<String, (Counter, Context)>,
    queue: VecDeque<(String, String, u64, Payload)>,
    down: BTreeSet<String>,
    /// (answering proxy, seq) of every outcome the ingress proxy got.
    answered: Vec<(String, u64)>,
    adds: Vec<AddBackup>,
}

impl Net {
    fn new() -> Net {
        let mut net = Net {
            proxies: BTreeMap::new(),
            copies: BTreeMap::new(),
            queue: VecDeque::new(),
            down: BTreeSet::new(),
            answered: Vec::new(),
            adds: Vec::new(),
        };
        for i in 0..3 {
            net.start(i);
        }
        net
    }

    /// Starts member `i` afresh (a first start, or a restart that lost its memory).
    fn start(&mut self, i: usize) {
        let args = Args::from([
            ("index".to_string(), Value::Int(i as i64)),
            (
                "peers".to_string(),
                Value::List(PEERS.iter().map(|p| p.to_string()).collect()),
            ),
            (
                "targets".to_string(),
                Value::List(vec![format!("KVS/Copy{i}")]),
            ),
        ]);
        let proxy = ChainProxy::from_config(&args).unwrap();
        self.proxies
            .insert(PEERS[i].to_string(), (proxy, Context::new(PEERS[i])));
        let copy = format!("KVS/Copy{i}");
        self.copies.insert(
            copy.clone(),
            (Counter::default(), Context::new(copy.as_str())),
        );
        self.down.remove(PEERS[i]);
        self.down.remove(&copy);
        // Distinct clocks make distinct incarnations.
        let now = 1_000 + self.adds.len() as u64 + 7 * i as u64 + self.answered.len() as u64;
        self.call(PEERS[i], None, 0, now, |a, ctx| {
            a.on_start(ctx);
            Ok(())
        });
    }

    fn call(
        &mut self,
        id: &str,
        from: Option<&str>,
        tag: u64,
        now: u64,
        f: impl FnOnce(&mut dyn Agent, &mut Context) -> Result<(), Error>,
    ) {
        let (agent, ctx): (&mut dyn Agent, &mut Context) = match self.proxies.get_mut(id) {
            Some((p, ctx)) => (p, ctx),
            None => {
                let (c, ctx) = self.copies.get_mut(id).unwrap();
                (c, ctx)
            }
        };
        ctx.begin(from.map(Id::from), now);
        ctx.set_tag(tag);
        f(agent, ctx).unwrap();
        let tag = ctx.tag();
        for effect in ctx.take_effects() {
            match effect {
                Effect::SendPhysical { to, payload } | Effect::Send { to, payload } => self
                    .queue
                    .push_back((id.to_string(), to.to_string(), tag, payload)),
                Effect::Forward {
                    to,
                    from,
                    tag,
                    payload,
                    ..
                } => self
                    .queue
                    .push_back((from.to_string(), to.to_string(), tag, payload)),
                _ => {}
            }
        }
    }

    /// Delivers everything in flight (dropping what goes to or comes from an agent that is
    /// down).
    fn run(&mut self) {
        while let Some((from, to, tag, payload)) = self.queue.pop_front() {
            if self.down.contains(&to) || self.down.contains(&from) {
                continue;
            }
            if self.proxies.contains_key(&to) || self.copies.contains_key(&to) {
                self.call(&to, Some(&from), tag, 2_000, |a, ctx| {
                    a.on_message(ctx, payload)
                });
            } else if to == INGRESS && payload.is::<Outcome>() {
                let seq = payload.decode::<Outcome>().unwrap().seq;
                self.answered.push((from, seq));
            } else if to == CONTROLLER && payload.is::<AddBackup>() {
                self.adds.push(payload.decode::<AddBackup>().unwrap());
            }
        }
    }

    /// Every proxy's timer fires `n` times.
    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            for id in PEERS {
                if !self.down.contains(id) {
                    self.call(id, None, 0, 3_000, |a, ctx| {
                        a.on_timer(ctx, TICK);
                        Ok(())
                    });
                }
            }
            self.run();
        }
    }

    fn nonce(&self, i: u64) -> u64 {
        self.proxies[PEERS[i as usize]].0.nonce
    }

    /// The controller sends view `number` (chain `chain`, head first) to every proxy up.
    fn view(&mut self, number: u64, chain: &[u64]) {
        let members: Vec<Member> = chain
            .iter()
            .map(|i| Member {
                index: *i,
                nonce: self.nonce(*i),
            })
            .collect();
        let view = View {
            group: "KVS".into(),
            number,
            primary: members[0],
            backups: members[1..].to_vec(),
        };
        for id in PEERS {
            let v = NewView { view: view.clone() };
            self.queue
                .push_back((CONTROLLER.into(), id.to_string(), 0, Payload::new(v)));
        }
        self.run();
    }

    /// A request from the ingress proxy to `to`.
    fn submit(&mut self, to: usize, seq: u64) {
        let command = Command {
            client: "c@1".into(),
            seq,
            ack: 0,
            name: "Put".into(),
            bytes: vec![seq as u8],
        };
        self.queue.push_back((
            INGRESS.into(),
            PEERS[to].into(),
            seq + 1,
            Payload::new(Submit { command }),
        ));
        self.run();
    }

    fn crash(&mut self, i: usize) {
        self.down.insert(PEERS[i].to_string());
        self.down.insert(format!("KVS/Copy{i}"));
    }

    fn status(&self, i: usize) -> ChainStatus {
        self.proxies[PEERS[i]].0.status()
    }

    fn executed(&self, i: usize) -> u64 {
        self.copies[&format!("KVS/Copy{i}")].0.0
    }
}

#[test]
fn writes_go_down_the_chain_and_the_tail_answers() {
    let mut net = Net::new();
    net.view(1, &[0, 1, 2]);
    assert_eq!(net.status(0).position, Position::Head);
    assert_eq!(net.status(1).position, Position::Middle);
    assert_eq!(net.status(2).position, Position::Tail);
    // The first acknowledgements tell each member where its successor's log ends.
    net.submit(0, 0);
    net.submit(0, 1);
    assert_eq!(
        net.answered,
        [(PEERS[2].to_string(), 0), (PEERS[2].to_string(), 1)],
        "only the tail answers"
    );
    for i in 0..3 {
        assert_eq!(net.executed(i), 2, "copy {i} applied both");
    }
    assert_eq!(
        net.status(0).committed,
        2,
        "the head heard the tail holds both"
    );
    // A request sent to a member that is not the head goes to the head.
    net.submit(2, 2);
    assert_eq!(net.answered.last(), Some(&(PEERS[2].to_string(), 2)));
    // A retry is answered again, with the first execution's outcome, and runs once.
    net.submit(0, 2);
    assert_eq!(net.answered.len(), 4);
    assert_eq!(net.executed(2), 3);
}

#[test]
fn a_failed_tail_is_replaced_by_its_predecessor_which_answers_what_it_holds() {
    let mut net = Net::new();
    net.view(1, &[0, 1, 2]);
    net.submit(0, 0);
    // The tail dies with a write on its way to it: member 1 applied it, nobody answered.
    net.crash(2);
    net.submit(0, 1);
    assert_eq!(net.answered.len(), 1);
    assert_eq!(net.executed(1), 2);
    net.view(2, &[0, 1]);
    assert_eq!(net.status(1).position, Position::Tail);
    assert_eq!(net.answered.last(), Some(&(PEERS[1].to_string(), 1)));
    net.submit(0, 2);
    assert_eq!(net.answered.last(), Some(&(PEERS[1].to_string(), 2)));
}

#[test]
fn a_failed_head_is_replaced_by_its_successor() {
    let mut net = Net::new();
    net.view(1, &[0, 1, 2]);
    net.submit(0, 0);
    net.crash(0);
    net.view(2, &[1, 2]);
    assert_eq!(net.status(1).position, Position::Head);
    net.submit(1, 1);
    assert_eq!(net.answered.last(), Some(&(PEERS[2].to_string(), 1)));
    assert_eq!(net.executed(2), 2);
}

#[test]
fn a_restarted_member_catches_up_and_is_added_once_the_chain_drained() {
    let mut net = Net::new();
    net.view(1, &[0, 1, 2]);
    net.submit(0, 0);
    net.submit(0, 1);
    net.crash(1);
    net.view(2, &[0, 2]);
    net.submit(0, 2);
    assert_eq!(net.answered.len(), 3);
    // Member 1 restarts with nothing; the controller has it outside the view.
    net.start(1);
    net.view(3, &[0, 2]);
    assert_eq!(net.status(1).position, Position::Joining);
    net.tick(10);
    assert_eq!(net.status(1).log_len, 3, "caught up with the committed log");
    assert_eq!(net.executed(1), 3);
    assert_eq!(net.adds.len(), 1, "the head asked the controller to add it");
    assert_eq!((net.adds[0].view, net.adds[0].index), (3, 1));
    assert_eq!(net.status(0).adding, Some(1));
    // Writes are held while the add is pending, and taken once the view comes.
    net.submit(0, 3);
    assert_eq!(net.answered.len(), 3);
    net.view(4, &[0, 1, 2]);
    assert_eq!(net.status(1).position, Position::Middle);
    net.tick(1);
    assert_eq!(net.answered.last(), Some(&(PEERS[2].to_string(), 3)));
    assert_eq!(net.executed(1), 4, "the new member applies what follows");
    assert_eq!(net.status(0).adding, None);
}

#[test]
fn a_replaced_head_that_applied_more_is_refused() {
    let mut net = Net::new();
    net.view(1, &[0, 1, 2]);
    net.submit(0, 0);
    // Member 0 is cut off (its box declared dead, wrongly); 1 heads view 2. 0 did not hear
    // and takes a write its copy applies, which nobody else will take.
    net.down.insert(PEERS[0].to_string());
    net.view(2, &[1, 2]);
    net.down.remove(PEERS[0]);
    let held = net.status(0).view;
    assert_eq!(held, 1);
    net.submit(0, 1);
    assert_eq!(net.executed(0), 2);
    assert_eq!(net.answered.len(), 1, "nobody answers view 1's write");
    net.view(2, &[1, 2]);
    net.tick(5);
    assert_eq!(net.status(0).position, Position::Fenced);
    assert!(net.adds.is_empty());
}
