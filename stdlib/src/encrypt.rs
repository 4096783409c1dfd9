//! `encrypt(key_env: "VAR")` / `encrypt(key_file: "path")`: authenticated encryption
//! (ChaCha20-Poly1305) of messages on a channel; the key never appears in source.

use chacha20poly1305::aead::{Aead, Generate, Payload as AeadPayload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ovid::{Context, Error, Message, Payload};
use serde::{Deserialize, Serialize};

use crate::expansion::{Args, Expansion, Request, Value, channel_pair, string};
use crate::proxy;
use crate::spec::{Param, ParamKind, Spec, Target};

/// The signature of `encrypt`.
pub const SPEC: Spec = Spec {
    name: "encrypt",
    target: Target::Channel,
    params: &[
        Param {
            name: "key_env",
            kind: ParamKind::Str,
            positional: false,
            required: false,
            doc: "the environment variable holding the key (default OVID_KEY)",
        },
        Param {
            name: "key_file",
            kind: ParamKind::Str,
            positional: false,
            required: false,
            doc: "a file holding the key",
        },
    ],
    preconditions: &[],
    summary: "encrypts and authenticates messages on a channel",
};

/// `encrypt` in the registry ([`crate::ALL`]).
pub struct EncryptTransformation;

impl crate::transformation::Transformation for EncryptTransformation {
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

    fn validate(&self, args: &Args) -> Result<(), crate::transformation::Invalid> {
        if args.contains_key("key_env") && args.contains_key("key_file") {
            return Err(crate::transformation::Invalid {
                message: "`encrypt` takes the key from `key_env` or from `key_file`, not both"
                    .to_string(),
                label: "two key sources",
            });
        }
        Ok(())
    }
}

/// An `Encryptor{i}` near each sender and a `Decryptor{i}` near the agent, sharing a key read
/// at start from `key_file` or the environment variable `key_env` (default `OVID_KEY`).
pub fn expand(req: &Request) -> Expansion {
    let mut config = Args::new();
    match req.args.get("key_file") {
        Some(Value::Str(f)) => config.insert("key_file".to_string(), Value::Str(f.clone())),
        _ => config.insert(
            "key_env".to_string(),
            Value::Str(string(req.args, "key_env", "OVID_KEY")),
        ),
    };
    channel_pair(req, "Encryptor", "Decryptor", config)
}

/// The proxy agents of this transformation, by kind: `Encryptor` and `Decryptor`. Each reads
/// the key when it starts; a missing or malformed key is an error then, naming where it looked.
pub fn proxies(
    _hooks: &std::sync::Arc<dyn crate::proxy::Hooks>,
) -> Vec<(&'static str, ovid::Factory)> {
    let env = |name: &str| std::env::var(name).ok();
    vec![
        (
            "Encryptor",
            proxy::factory(move |args| {
                Encryptor::new(
                    &load_key(args, env, "Encryptor")?,
                    proxy::one_target(args, "Encryptor")?,
                )
            }),
        ),
        (
            "Decryptor",
            proxy::factory(move |args| {
                Ok(Decryptor::new(
                    &load_key(args, env, "Decryptor")?,
                    proxy::one_target(args, "Decryptor")?,
                ))
            }),
        ),
    ]
}

/// A 256-bit key; its bytes are never printed.
#[derive(Clone)]
pub struct Key(chacha20poly1305::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes.into())
    }

    /// A key written as 64 hexadecimal digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes: [u8; 32] = proxy::unhex(text.trim())?.try_into().ok()?;
        Some(Key::from_bytes(bytes))
    }

    /// A fresh random key (for tests and for `ovidc` to suggest one).
    pub fn generate() -> Self {
        Key::from_bytes(<[u8; 32]>::generate())
    }

    /// The key as 64 hexadecimal digits, the form `key_env` and `key_file` take.
    pub fn to_hex(&self) -> String {
        proxy::hex(&self.0)
    }
}

/// Reads the key the configuration names: the file `key_file` (64 hexadecimal digits, or
/// exactly 32 raw bytes), else the environment variable `key_env` (default `OVID_KEY`; 64
/// hexadecimal digits), looked up with `env`. Errors say where it looked, never the key.
pub fn load_key(
    args: &Args,
    env: impl Fn(&str) -> Option<String>,
    kind: &str,
) -> Result<Key, Error> {
    const FORM: &str = "32 bytes, written as 64 hexadecimal digits";
    if let Some(Value::Str(path)) = args.get("key_file") {
        let bytes = std::fs::read(path).map_err(|e| {
            proxy::bad_config(kind, format!("cannot read the key file `{path}`: {e}"))
        })?;
        let key = std::str::from_utf8(&bytes).ok().and_then(Key::from_hex);
        return match (key, <[u8; 32]>::try_from(bytes.as_slice())) {
            (Some(key), _) => Ok(key),
            (None, Ok(raw)) => Ok(Key::from_bytes(raw)),
            (None, Err(_)) => Err(proxy::bad_config(
                kind,
                format!("the key file `{path}` must hold {FORM} (or exactly 32 raw bytes)"),
            )),
        };
    }
    let var = string(args, "key_env", "OVID_KEY");
    match env(&var) {
        None => Err(proxy::bad_config(
            kind,
            format!(
                "the environment variable `{var}` holding the key is not set (it must hold {FORM})"
            ),
        )),
        Some(text) => Key::from_hex(&text).ok_or_else(|| {
            proxy::bad_config(
                kind,
                format!("the environment variable `{var}` must hold {FORM}"),
            )
        }),
    }
}

/// What an encryptor sends its decryptor in place of a message: the message's type name and
/// postcard bytes, encrypted and authenticated together with its sender and tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "ovid.encrypt.Sealed")]
pub struct Sealed {
    /// The encryptor's random prefix (16 bytes) followed by its message counter (8 bytes, big
    /// endian): never the same twice under one key.
    #[serde(with = "crate::proxy::byte_buf")]
    pub nonce: Vec<u8>,
    /// The encrypted [`Plain`] and its 16-byte authentication tag.
    #[serde(with = "crate::proxy::byte_buf")]
    pub ciphertext: Vec<u8>,
}

/// What a [`Sealed`] message holds once decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plain {
    /// The message's type name.
    pub name: String,
    /// Its postcard encoding.
    #[serde(with = "crate::proxy::byte_buf")]
    pub bytes: Vec<u8>,
}

/// The associated data: what a sealed message is bound to besides its contents — the
/// decryptor it is for, its original sender and its tag — so that it cannot be passed off as
/// coming from someone else, or be delivered to another channel sharing the key.
fn associated_data(decryptor: &str, from: &str, tag: u64) -> Vec<u8> {
    postcard::to_stdvec(&("ovid.encrypt.v1", decryptor, from, tag)).unwrap_or_default()
}

const PREFIX: usize = 16;

/// Near a sender: encrypts each message (XChaCha20-Poly1305) and passes it on as if the
/// original sender had sent it, with its tag.
pub struct Encryptor {
    cipher: XChaCha20Poly1305,
    target: String,
    /// Random per encryptor (so per start): two encryptors never share a nonce.
    prefix: [u8; PREFIX],
    /// Messages sealed so far; with the prefix, the nonce.
    counter: u64,
}

impl Encryptor {
    /// An encryptor sealing for the decryptor `target`, with a fresh random nonce prefix.
    pub fn new(key: &Key, target: String) -> Result<Self, Error> {
        let prefix = <[u8; PREFIX]>::try_generate().map_err(|e| {
            proxy::bad_config("Encryptor", format!("no randomness for the nonce: {e}"))
        })?;
        Ok(Encryptor {
            cipher: XChaCha20Poly1305::new(&key.0),
            target,
            prefix,
            counter: 0,
        })
    }

    /// Seals one message sent by `from` with tag `tag`.
    pub fn seal(
        &mut self,
        name: &str,
        bytes: &[u8],
        from: &str,
        tag: u64,
    ) -> Result<Sealed, Error> {
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| proxy::rejected("Encryptor", "nonce counter exhausted"))?;
        let mut nonce = [0u8; 24];
        nonce[..PREFIX].copy_from_slice(&self.prefix);
        nonce[PREFIX..].copy_from_slice(&self.counter.to_be_bytes());
        let plain = postcard::to_stdvec(&Plain {
            name: name.to_string(),
            bytes: bytes.to_vec(),
        })
        .map_err(|e| Error::Encode {
            name: name.to_string(),
            source: e,
        })?;
        let aad = associated_data(&self.target, from, tag);
        let ciphertext = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                AeadPayload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| proxy::rejected("Encryptor", "encryption failed"))?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }
}

impl ovid::Agent for Encryptor {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let from = ctx.sender_id().unwrap_or_else(|| ctx.me().into());
        let tag = ctx.tag();
        let sealed = self.seal(message.name(), &message.to_bytes()?, &from, tag)?;
        ctx.forward(&self.target, from, tag, Payload::new(sealed));
        Ok(())
    }
}

/// How many encryptor starts (nonce prefixes) a decryptor remembers for replay protection.
const REMEMBERED: usize = 256;

/// Near the agent: checks and decrypts each sealed message and passes it on with its name,
/// sender and tag. A message that fails authentication (tampered, wrong key, wrong sender or
/// channel) or that it has seen before (replayed) is rejected — counted by the box, never
/// delivered.
pub struct Decryptor {
    cipher: XChaCha20Poly1305,
    target: String,
    /// Per encryptor start (nonce prefix), the highest counter delivered, oldest first:
    /// messages of one encryptor arrive in order, so anything not above it is a replay.
    seen: Vec<([u8; PREFIX], u64)>,
}

impl Decryptor {
    /// A decryptor passing what it opens on to `target`.
    pub fn new(key: &Key, target: String) -> Self {
        Decryptor {
            cipher: XChaCha20Poly1305::new(&key.0),
            target,
            seen: Vec::new(),
        }
    }

    /// Opens a message sealed for the decryptor `me` by the sender `from` with tag `tag`;
    /// remembers its nonce so it is accepted only once.
    pub fn open(
        &mut self,
        sealed: &Sealed,
        me: &str,
        from: &str,
        tag: u64,
    ) -> Result<Plain, Error> {
        let nonce: [u8; 24] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| proxy::rejected("Decryptor", "malformed nonce"))?;
        let prefix: [u8; PREFIX] = nonce[..PREFIX].try_into().unwrap_or_default();
        let counter = u64::from_be_bytes(nonce[PREFIX..].try_into().unwrap_or_default());
        let known = self.seen.iter().position(|(p, _)| *p == prefix);
        if known.is_some_and(|i| counter <= self.seen[i].1) {
            return Err(proxy::rejected("Decryptor", "replayed message"));
        }
        let aad = associated_data(me, from, tag);
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                AeadPayload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                proxy::rejected(
                    "Decryptor",
                    "authentication failed (tampered, wrong key, or wrong sender)",
                )
            })?;
        let plain: Plain = postcard::from_bytes(&plain).map_err(|e| Error::Decode {
            name: Sealed::NAME.into(),
            source: e,
        })?;
        match known {
            Some(i) => self.seen[i].1 = counter,
            None => {
                if self.seen.len() == REMEMBERED {
                    self.seen.remove(0);
                }
                self.seen.push((prefix, counter));
            }
        }
        Ok(plain)
    }
}

impl ovid::Agent for Decryptor {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        if !message.is::<Sealed>() {
            return Err(proxy::rejected(
                "Decryptor",
                format!("expected a sealed message, got `{}`", message.name()),
            ));
        }
        let sealed = message.decode::<Sealed>()?;
        let from = ctx.sender_id().unwrap_or_else(|| ctx.me().into());
        let tag = ctx.tag();
        let plain = self.open(&sealed, ctx.me(), &from, tag)?;
        ctx.forward(
            &self.target,
            from,
            tag,
            Payload::Encoded {
                name: plain.name.into(),
                bytes: plain.bytes.into(),
            },
        );
        Ok(())
    }

    /// The replay window survives a move: a restored decryptor still refuses old messages.
    fn snapshot(&self) -> Result<Vec<u8>, Error> {
        ovid::agent::serde_snapshot(&self.seen)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if !bytes.is_empty() {
            self.seen = ovid::agent::serde_restore(bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Key, Encryptor, Decryptor) {
        let key = Key::generate();
        (
            key.clone(),
            Encryptor::new(&key, "D".into()).unwrap(),
            Decryptor::new(&key, "A".into()),
        )
    }

    #[test]
    fn sealed_messages_open_once_and_only_as_sent() {
        let (key, mut enc, mut dec) = pair();
        let s1 = enc.seal("Put", b"hello", "client", 7).unwrap();
        let s2 = enc.seal("Put", b"hello", "client", 7).unwrap();
        assert_ne!(s1.nonce, s2.nonce, "a fresh nonce per message");
        assert_ne!(s1.ciphertext, s2.ciphertext);
        assert!(
            !s1.ciphertext.windows(5).any(|w| w == b"hello"),
            "the body is not in clear"
        );
        // Wrong sender, tag or decryptor: the associated data does not match.
        assert!(dec.open(&s1, "D", "mallory", 7).is_err());
        assert!(dec.open(&s1, "D", "client", 8).is_err());
        assert!(dec.open(&s1, "E", "client", 7).is_err());
        let p = dec.open(&s1, "D", "client", 7).unwrap();
        assert_eq!(
            (p.name.as_str(), p.bytes.as_slice()),
            ("Put", &b"hello"[..])
        );
        assert!(
            dec.open(&s1, "D", "client", 7).is_err(),
            "a replay is refused"
        );
        let mut bad = s2.clone();
        *bad.ciphertext.last_mut().unwrap() ^= 1;
        assert!(
            dec.open(&bad, "D", "client", 7).is_err(),
            "a flipped bit is refused"
        );
        assert!(
            dec.open(&s2, "D", "client", 7).is_ok(),
            "a failed forgery does not spoil the real one"
        );
        // A restarted encryptor (new prefix) is accepted; the old one's messages still are not.
        let mut again = Encryptor::new(&key, "D".into()).unwrap();
        let s3 = again.seal("Get", b"k", "client", 1).unwrap();
        assert!(dec.open(&s3, "D", "client", 1).is_ok());
        assert!(dec.open(&s2, "D", "client", 7).is_err());
        // Another key cannot open it.
        let (_, _, mut other) = pair();
        let s4 = enc.seal("Get", b"k", "client", 1).unwrap();
        assert!(other.open(&s4, "D", "client", 1).is_err());
    }

    #[test]
    fn keys_come_from_a_file_or_the_environment_and_are_checked() {
        let key = Key::generate();
        let hex = key.to_hex();
        let env = |v: &str| (v == "GOOD").then(|| format!("  {hex}\n"));
        let args = |k: &str, v: &str| Args::from([(k.to_string(), Value::Str(v.to_string()))]);
        assert_eq!(
            load_key(&args("key_env", "GOOD"), env, "E")
                .unwrap()
                .to_hex(),
            hex
        );
        let missing = load_key(&Args::new(), env, "E").unwrap_err().to_string();
        assert!(
            missing.contains("OVID_KEY") && missing.contains("not set"),
            "{missing}"
        );
        let short = load_key(&args("key_env", "SHORT"), |_| Some("abcd".into()), "E")
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("64 hexadecimal digits") && !short.contains("abcd"),
            "{short}"
        );
        let dir = std::env::temp_dir().join(format!("ovid-encrypt-key-{}", std::process::id()));
        std::fs::write(&dir, format!("{hex}\n")).unwrap();
        assert_eq!(
            load_key(&args("key_file", dir.to_str().unwrap()), env, "E")
                .unwrap()
                .to_hex(),
            hex
        );
        std::fs::write(&dir, [9u8; 32]).unwrap();
        assert_eq!(
            load_key(&args("key_file", dir.to_str().unwrap()), env, "E")
                .unwrap()
                .to_hex(),
            proxy::hex(&[9u8; 32])
        );
        std::fs::write(&dir, b"not a key").unwrap();
        assert!(load_key(&args("key_file", dir.to_str().unwrap()), env, "E").is_err());
        std::fs::remove_file(&dir).unwrap();
        let gone = load_key(&args("key_file", dir.to_str().unwrap()), env, "E")
            .unwrap_err()
            .to_string();
        assert!(gone.contains("cannot read the key file"), "{gone}");
    }
}
