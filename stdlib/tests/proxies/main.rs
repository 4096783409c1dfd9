//! The proxy agents of the standard library at run time: each transformation's differential
//! test (the same workload against the agent untransformed and behind its proxies, placed as
//! the expansion says, over two boxes) and the checks particular to it.

mod common;

mod audit;
mod batch;
mod compress;
mod encrypt;
mod load_balance;
mod monitor;
mod shard;
