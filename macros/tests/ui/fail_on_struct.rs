#![allow(unused_imports, dead_code)]
use ovid::{Context, Message};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Message)]
struct Ping;

#[derive(Serialize, Deserialize, Message)]
struct Pong;

#[derive(Default, Serialize, Deserialize)]
struct Echo;

#[ovid::agent]
struct Other;

fn main() {}
