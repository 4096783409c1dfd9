//! The key-value store and its client, written by hand in Rust with `#[ovid::agent]`.
//!
//! Two agents: `KVS`, a map from keys to values that answers `Put` and `Get`, and `client`,
//! which writes a few keys, reads them back, prints what it got and finishes. Neither knows
//! where the other runs: the client sends to the identifier `KVS`, and the controller's
//! placement decides whether that is an in-memory queue in the same box or a TCP connection to
//! another box.

use std::collections::BTreeMap;

use ovid::{BoxBuilder, BoxHandle, Context, Controller, Message, Placement};
use serde::{Deserialize, Serialize};

/// Store `value` under `key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Put {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// `key` is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct PutOk {
    /// The key.
    pub key: String,
}

/// What is stored under `key`?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Get {
    /// The key.
    pub key: String,
}

/// What is stored under `key`, if anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct GetOk {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Option<String>,
}

/// The key-value store agent.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeyValueStore {
    store: BTreeMap<String, String>,
}

#[ovid::agent]
impl KeyValueStore {
    /// Stores, and replies `PutOk` (the return value is the reply).
    fn on_put(&mut self, _ctx: &mut Context, put: Put) -> PutOk {
        self.store.insert(put.key.clone(), put.value);
        PutOk { key: put.key }
    }

    /// Replies with what is stored.
    fn on_get(&mut self, _ctx: &mut Context, get: Get) -> GetOk {
        GetOk {
            value: self.store.get(&get.key).cloned(),
            key: get.key,
        }
    }
}

/// The client agent: puts `keys`, gets each back once stored, prints, finishes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Client {
    keys: Vec<String>,
    pending: usize,
}

impl Client {
    /// A client for the given number of keys (`fruit-0`, `fruit-1`, ...).
    pub fn new(n: usize) -> Self {
        Client {
            keys: (0..n).map(|i| format!("fruit-{i}")).collect(),
            pending: 0,
        }
    }
}

#[ovid::agent]
impl Client {
    fn on_start(&mut self, ctx: &mut Context) {
        for k in &self.keys {
            ctx.send(
                "KVS",
                Put {
                    key: k.clone(),
                    value: format!("{k} pie"),
                },
            );
            self.pending += 1;
        }
    }

    fn on_put_ok(&mut self, ctx: &mut Context, ok: PutOk) {
        ctx.send("KVS", Get { key: ok.key });
    }

    fn on_get_ok(&mut self, ctx: &mut Context, got: GetOk) {
        match got.value {
            Some(v) => ctx.print(format!("{} = {v}", got.key)),
            None => ctx.print(format!("{} is missing", got.key)),
        }
        self.pending -= 1;
        if self.pending == 0 {
            ctx.finish();
        }
    }
}

/// How many keys the client writes.
pub const KEYS: usize = 3;

/// The placement: `KVS` in box `store_box`, `client` in box `client_box`.
pub fn placement(store_box: &str, client_box: &str) -> Placement {
    Placement::new()
        .agent("KVS", store_box, "KeyValueStore")
        .agent("client", client_box, "Client")
}

/// A box that can run both agents.
pub fn builder(name: &str) -> BoxBuilder {
    BoxBuilder::new(name)
        .kind("KeyValueStore", |_| KeyValueStore::default())
        .kind("Client", |_| Client::new(KEYS))
}

/// Runs both agents co-located in one box with the controller; returns when the client is done.
pub async fn run_co_located() -> ovid::Result<BoxHandle> {
    let b = builder("main")
        .with_controller(Controller::new(placement("main", "main")))
        .start()
        .await?;
    b.ready().await?;
    b.wait_stopped("client").await;
    Ok(b)
}

/// Starts the store box (with the controller), listening on `listen`.
pub async fn start_store(listen: &str) -> ovid::Result<BoxHandle> {
    let b = builder("store")
        .listen(listen)
        .with_controller(Controller::new(placement("store", "front")))
        .start()
        .await?;
    b.ready().await?;
    Ok(b)
}

/// Starts the client box against the controller at `controller`; returns when the client is done.
pub async fn run_client(controller: &str) -> ovid::Result<BoxHandle> {
    let b = builder("front").controller_at(controller).start().await?;
    b.ready().await?;
    b.wait_stopped("client").await;
    Ok(b)
}
