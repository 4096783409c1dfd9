//! `load_balance(n)`: n copies of a stateless agent behind a proxy that spreads messages.

use ovid::{Context, Error, Payload};

use crate::expansion::{Args, Expansion, Request, Value, int};
use crate::proxy;
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};

/// The signature of `load_balance`.
pub const SPEC: Spec = Spec {
    name: "load_balance",
    target: Target::Agent,
    params: &[Param {
        name: "n",
        kind: ParamKind::Int { min: 1, max: 1024 },
        positional: true,
        required: true,
        doc: "the number of workers",
    }],
    preconditions: &[Precondition::Stateless],
    summary: "spreads messages over n copies of a stateless agent",
};

/// `load_balance` in the registry ([`crate::ALL`]).
pub struct LoadBalanceTransformation;

impl crate::transformation::Transformation for LoadBalanceTransformation {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn expand(&self, req: &Request) -> Expansion {
        expand(req)
    }

    fn proxies(
        &self,
        hooks: &std::sync::Arc<dyn crate::proxy::Hooks>,
    ) -> Vec<(&'static str, ovid::Factory)> {
        proxies(hooks)
    }
}

/// Runs `X/Worker0..n-1`; each sender gets a balancer `X/LoadBalancer{i}` that sends its
/// messages to the workers in turn (round robin); workers reply straight to the sender.
pub fn expand(req: &Request) -> Expansion {
    let n = int(req.args, "n", 1);
    let mut e = Expansion::default();
    let workers: Vec<String> = (0..n).map(|j| format!("{}/Worker{j}", req.id)).collect();
    for (i, s) in req.senders.iter().enumerate() {
        let id = format!("{}/LoadBalancer{i}", req.id);
        e.proxy(
            id.clone(),
            "LoadBalancer",
            Args::from([("sender".to_string(), Value::Str(s.clone()))]),
            workers.clone(),
        );
        e.entry.insert(s.clone(), id);
    }
    for w in workers {
        e.copy(w);
    }
    e
}

/// The proxy agents of this transformation, by kind: `LoadBalancer`.
pub fn proxies(
    _hooks: &std::sync::Arc<dyn crate::proxy::Hooks>,
) -> Vec<(&'static str, ovid::Factory)> {
    vec![(
        "LoadBalancer",
        proxy::factory(|args| {
            let targets = proxy::ids(args, "targets");
            if targets.is_empty() {
                return Err(proxy::bad_config("LoadBalancer", "no workers to send to"));
            }
            Ok(LoadBalancer {
                targets,
                next: None,
            })
        }),
    )]
}

/// Stands in for the workers towards one sender: sends each message to the next worker, round
/// robin, as if the sender had sent it there, so the worker replies straight to the sender.
pub struct LoadBalancer {
    targets: Vec<String>,
    /// The worker for the next message; balancers of different senders start at different
    /// workers (a hash of their identifier), so the first messages of many senders spread too.
    next: Option<usize>,
}

impl ovid::Agent for LoadBalancer {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let n = self.targets.len();
        let j = *self
            .next
            .get_or_insert_with(|| (proxy::stable_hash(ctx.me()) % n as u64) as usize);
        self.next = Some((j + 1) % n);
        let from = ctx.sender_id().unwrap_or_else(|| ctx.me().into());
        let tag = ctx.tag();
        ctx.forward(&self.targets[j], from, tag, message);
        Ok(())
    }
}
