//! Agents and messages shared by the runtime tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use ovid::{Context, Message};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Put {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct PutOk {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Get {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct GetOk {
    pub key: String,
    pub value: Option<String>,
}

/// The key-value store.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Kvs {
    pub store: BTreeMap<String, String>,
}

#[ovid::agent]
impl Kvs {
    fn on_put(&mut self, _ctx: &mut Context, put: Put) -> PutOk {
        self.store.insert(put.key.clone(), put.value);
        PutOk { key: put.key }
    }

    fn on_get(&mut self, _ctx: &mut Context, get: Get) -> GetOk {
        GetOk {
            value: self.store.get(&get.key).cloned(),
            key: get.key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Seq(pub u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Boom;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct HowMany;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Count(pub u64);

/// Counts ticks of a 100 ms timer; panics on `Boom`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ticker {
    pub ticks: u64,
}

#[ovid::agent]
impl Ticker {
    fn on_start(&mut self, ctx: &mut Context) {
        ctx.set_timer("tick", Duration::from_millis(100));
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        assert_eq!(name, "tick");
        self.ticks += 1;
        if self.ticks < 5 {
            ctx.set_timer("tick", Duration::from_millis(100));
        }
    }

    fn on_how_many(&mut self, _ctx: &mut Context, _q: HowMany) -> Count {
        Count(self.ticks)
    }

    fn on_boom(&mut self, _ctx: &mut Context, _b: Boom) {
        panic!("boom");
    }
}

/// Starts a tracing subscriber once (RUST_LOG=ovid=debug to see the runtime talk).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
