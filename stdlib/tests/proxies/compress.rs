//! `compress(lz4)` and `compress(zstd)`: replies identical to the plain channel.

use ovid_stdlib::compress;
use ovid_stdlib::expansion::{Args, Value};

use crate::common::*;

#[tokio::test]
async fn lz4_channel_answers_like_the_store() {
    let e = expand(compress::expand, &Args::new(), 2);
    let (sys, plain) = differential(&e, "Kvs", 2, true, 41).await;
    sys.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test]
async fn zstd_channel_answers_like_the_store() {
    let e = expand(
        compress::expand,
        &Args::from([("algo".to_string(), Value::Str("zstd".into()))]),
        2,
    );
    let (sys, plain) = differential(&e, "Kvs", 2, true, 42).await;
    sys.shutdown().await;
    plain.shutdown().await;
}
