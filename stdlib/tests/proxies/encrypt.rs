//! `encrypt(key_file: ..)`: replies identical; a tampered, replayed or misattributed message is
//! rejected and counted, never delivered; a missing key stops the proxy at start.

use ovid::Payload;
use ovid_stdlib::encrypt::{self, Encryptor, Key, Sealed};
use ovid_stdlib::expansion::{Args, Value};
use ovid_stdlib::proxy;

use crate::common::*;

/// A fresh key in a file of its own (the key is never in source).
fn key_file(name: &str) -> (Key, std::path::PathBuf) {
    let key = Key::generate();
    let path = temp_path(name);
    std::fs::write(&path, key.to_hex()).unwrap();
    (key, path)
}

fn args(path: &std::path::Path) -> Args {
    Args::from([(
        "key_file".to_string(),
        Value::Str(path.display().to_string()),
    )])
}

#[tokio::test]
async fn encrypted_channel_answers_like_the_store() {
    let (_, path) = key_file("encrypt-key");
    let e = expand(encrypt::expand, &args(&path), 2);
    let (sys, plain) = differential(&e, "Kvs", 2, true, 71).await;
    sys.shutdown().await;
    plain.shutdown().await;
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn tampered_replayed_or_misattributed_messages_are_rejected_and_counted() {
    let (key, path) = key_file("encrypt-tamper-key");
    let e = expand(encrypt::expand, &args(&path), 1);
    let mut sys = start_transformed(&e, "Kvs", 1).await;
    let mallory = sys.boxes[0].endpoint("mallory").unwrap();
    let back = sys.boxes.pop().unwrap();

    // What an encryptor with the right key would send for client0 (tag 0, as endpoints send).
    let mut enc = Encryptor::new(&key, "KVS/Decryptor0".into()).unwrap();
    let put = Put {
        key: "k".into(),
        value: "v".into(),
    };
    let sealed = enc
        .seal("Put", &postcard::to_stdvec(&put).unwrap(), "client0", 0)
        .unwrap();
    let mut tampered = enc
        .seal("Put", &postcard::to_stdvec(&put).unwrap(), "client0", 0)
        .unwrap();
    tampered.ciphertext[3] ^= 0x40;

    let ep = &mut sys.endpoints[0];
    ep.send_physical("KVS/Decryptor0", tampered);
    ep.send_physical(
        "KVS/Decryptor0",
        Sealed {
            nonce: vec![0; 3],
            ciphertext: vec![1, 2, 3],
        },
    );
    mallory.send_physical("KVS/Decryptor0", sealed.clone()); // not from client0: wrong sender
    assert!(
        recv_within(ep, 150).await.is_none(),
        "nothing forged was delivered"
    );
    assert_eq!(back.metrics().rejections, 3);

    // The genuine message is delivered once...
    ep.send_physical("KVS/Decryptor0", sealed.clone());
    assert_eq!(
        reply(recv(ep).await),
        Reply::PutOk {
            key: "k".into(),
            previous: None
        }
    );
    // ...and refused when replayed.
    ep.send_physical("KVS/Decryptor0", sealed);
    assert!(recv_within(ep, 150).await.is_none());
    assert_eq!(back.metrics().rejections, 4);

    // The channel itself still works, and the store saw exactly one write.
    send(ep, &Op::Get(Get { key: "k".into() })).await;
    assert_eq!(
        reply(recv(ep).await),
        Reply::GetOk {
            key: "k".into(),
            value: Some("v".into())
        }
    );
    send(
        ep,
        &Op::Put(Put {
            key: "k".into(),
            value: "w".into(),
        }),
    )
    .await;
    assert_eq!(
        reply(recv(ep).await),
        Reply::PutOk {
            key: "k".into(),
            previous: Some("v".into())
        }
    );
    assert_eq!(sys.rejections() + back.metrics().rejections, 4);

    drop(mallory);
    sys.boxes.push(back);
    sys.shutdown().await;
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_missing_or_malformed_key_stops_the_proxy_at_start() {
    let factories = encrypt::proxies(&(std::sync::Arc::new(proxy::NoHooks) as _));
    let config = |extra: (&str, &str)| {
        serde_json::to_vec(&Args::from([
            (extra.0.to_string(), Value::Str(extra.1.to_string())),
            (
                "targets".to_string(),
                Value::List(vec!["KVS/Decryptor0".into()]),
            ),
        ]))
        .unwrap()
    };
    let bad = temp_path("encrypt-bad-key");
    std::fs::write(&bad, "0123").unwrap();
    for (kind, make) in &factories {
        let unset = make(&config(("key_env", "OVID_TEST_KEY_THAT_IS_NEVER_SET")))
            .err()
            .unwrap()
            .to_string();
        assert!(
            unset.contains(kind)
                && unset.contains("OVID_TEST_KEY_THAT_IS_NEVER_SET")
                && unset.contains("not set"),
            "{unset}"
        );
        let malformed = make(&config(("key_file", bad.to_str().unwrap())))
            .err()
            .unwrap()
            .to_string();
        assert!(
            malformed.contains("must hold 32 bytes") && !malformed.contains("0123"),
            "{malformed}"
        );
    }
    std::fs::remove_file(&bad).unwrap();
}

/// What the encryptor hands on: the original sender and tag kept, the body sealed.
#[test]
fn the_encryptor_forwards_a_sealed_message_as_the_sender() {
    let key = Key::generate();
    let mut enc = Encryptor::new(&key, "KVS/Decryptor0".into()).unwrap();
    let mut ctx = ovid::Context::new("KVS/Encryptor0");
    ctx.begin(Some("client0".into()), 0);
    ctx.set_tag(9);
    ovid::Agent::on_message(
        &mut enc,
        &mut ctx,
        Payload::new(Put {
            key: "secret-key".into(),
            value: "secret-value".into(),
        }),
    )
    .unwrap();
    match ctx.take_effects().as_slice() {
        [
            ovid::Effect::Forward {
                to,
                from,
                tag,
                payload,
                ..
            },
        ] => {
            assert_eq!((&**to, &**from, *tag), ("KVS/Decryptor0", "client0", 9));
            let sealed = payload.peek::<Sealed>().unwrap();
            let body = payload.to_bytes().unwrap();
            assert!(!body.windows(6).any(|w| w == b"secret"), "nothing in clear");
            assert_eq!(sealed.nonce.len(), 24);
        }
        other => panic!("{other:?}"),
    }
}
