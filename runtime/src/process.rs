//! External agents: a child process, written in any language, that speaks the JSON line
//! protocol of Maelstrom on its standard input and output.
//!
//! Each line is one message in the Maelstrom envelope:
//! `{"src": .., "dest": .., "body": {"type": .., "msg_id": .., "in_reply_to": .., fields..}}`.
//! The box first sends `init` (`node_id`, `node_ids`) and the process answers `init_ok`.
//! A message for the agent arrives as a line whose `src` is its sender; a line the process
//! writes with `in_reply_to` is the reply to that message; any other line is a send to `dest`,
//! one of the names the agent `uses` (or a physical identifier). Standard error is the box's.
//!
//! [`ProcessAgent`] is an ordinary agent: the child's output comes back into its inbox
//! through [`Context::outside`], so it handles one message at a time like any other.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::context::Context;
use crate::deployment::Bindings;
use crate::error::Error;
use crate::message::{Id, Payload};
use crate::routing::system_messages;

/// Turns a system's messages into JSON bodies and back (the generated code knows the types).
pub trait JsonCodec: Send + Sync + 'static {
    /// The fields of the message in `payload`, as a JSON object (without `type`).
    fn to_json(&self, payload: Payload) -> Result<Value, Error>;
    /// The message of type `name` with the fields of `body`.
    #[allow(clippy::wrong_self_convention)] // a codec's method, not a constructor
    fn from_json(&self, name: &str, body: Value) -> Result<Payload, Error>;
}

/// One line the child wrote, handed to the agent through its inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessOutput {
    /// The line, without its newline.
    pub line: String,
}

/// The child's standard output closed: it exited.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessExited {}

system_messages!(ProcessOutput, ProcessExited);

/// The agent that runs an external process; see the module docs.
pub struct ProcessAgent {
    command: String,
    bindings: Bindings,
    codec: Arc<dyn JsonCodec>,
    stdin: Option<mpsc::UnboundedSender<String>>,
    next_msg_id: u64,
    /// msg_id of a message given to the child → its sender and correlation tag.
    pending: HashMap<u64, (Id, u64)>,
}

impl ProcessAgent {
    /// An agent running `command` (through `sh -c`), wired by `bindings`.
    pub fn new(command: impl Into<String>, bindings: Bindings, codec: Arc<dyn JsonCodec>) -> Self {
        ProcessAgent {
            command: command.into(),
            bindings,
            codec,
            stdin: None,
            next_msg_id: 0,
            pending: HashMap::new(),
        }
    }

    fn write(&mut self, ctx: &Context, line: Value) {
        let sent = self
            .stdin
            .as_ref()
            .is_some_and(|tx| tx.send(line.to_string()).is_ok());
        if !sent {
            tracing::warn!(agent = %ctx.me(), "external process is not running; message dropped");
        }
    }

    fn output(&mut self, ctx: &mut Context, line: &str) -> Result<(), Error> {
        let bad = |why: String| Error::Invalid(format!("external agent {}: {why}", ctx.me()));
        let msg: Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}: {line}")))?;
        let dest = msg
            .get("dest")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let Some(Value::Object(mut body)) = msg.get("body").cloned() else {
            return Err(bad(format!("no `body` object: {line}")));
        };
        let ty = body
            .remove("type")
            .and_then(|t| t.as_str().map(str::to_string))
            .ok_or_else(|| bad(format!("no `body.type`: {line}")))?;
        body.remove("msg_id");
        let in_reply_to = body.remove("in_reply_to").and_then(|v| v.as_u64());
        if ty == "init_ok" {
            return Ok(());
        }
        let payload = self.codec.from_json(&ty, Value::Object(body))?;
        let me: Id = ctx.me().into();
        match in_reply_to.and_then(|id| self.pending.remove(&id)) {
            Some((sender, tag)) => ctx.forward_physical(&sender, me, tag, payload),
            None if self.bindings.0.contains_key(&dest) => {
                let to = self.bindings.get(&dest);
                ctx.forward(&to, me, 0, payload)
            }
            None => ctx.forward(&dest, me, 0, payload),
        }
        Ok(())
    }
}

impl Agent for ProcessAgent {
    fn on_start(&mut self, ctx: &mut Context) {
        let me = ctx.me().to_string();
        let Some(outside) = ctx.outside() else {
            tracing::error!(agent = %me, "an external agent needs a box to run in");
            return;
        };
        let mut child = match tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(agent = %me, command = %self.command, error = %e, "cannot start external agent");
                return;
            }
        };
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return;
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(mut line) = rx.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            drop(stdin);
            let _ = child.wait().await;
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.trim().is_empty() && !outside.deliver(ProcessOutput { line }, 0) {
                    return;
                }
            }
            outside.deliver(ProcessExited {}, 0);
        });
        self.stdin = Some(tx);
        let init = json!({"src": "ovid", "dest": me, "body": {"type": "init", "msg_id": 0, "node_id": me, "node_ids": [me]}});
        self.write(ctx, init);
    }

    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        if message.is::<ProcessOutput>() {
            let out = message.decode::<ProcessOutput>()?;
            return self.output(ctx, &out.line);
        }
        if message.is::<ProcessExited>() {
            tracing::warn!(agent = %ctx.me(), command = %self.command, "external agent exited");
            self.stdin = None;
            return Ok(());
        }
        let name = message.name().to_string();
        let mut body = match self.codec.to_json(message)? {
            Value::Object(m) => m,
            other => Map::from_iter([("value".to_string(), other)]),
        };
        self.next_msg_id += 1;
        let msg_id = self.next_msg_id;
        let sender = ctx.sender_id().unwrap_or_else(|| ctx.me().into());
        self.pending.insert(msg_id, (sender.clone(), ctx.tag()));
        body.insert("type".into(), Value::String(name));
        body.insert("msg_id".into(), json!(msg_id));
        let line = json!({"src": &*sender, "dest": ctx.me(), "body": body});
        self.write(ctx, line);
        Ok(())
    }
}
