#![allow(unused_imports, dead_code)]
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, ovid::Message)]
struct Wrapper<T> {
    inner: T,
}

fn main() {}
