//! The HTTP front end of the webkvs example: `impl rust "webkvs::HttpFront"` in webkvs.ovid.
//!
//! `HttpFront` is an ordinary Ovid agent. A thread of its own serves HTTP (tiny_http) and hands
//! each request to the agent as an [`HttpCall`] message through [`ovid::Outside`], tagged with
//! the request's number. The agent turns it into a `Put` or a `Get` to the identifier it uses
//! as `kvs`; whatever it sends while handling the call carries the tag, and so do the replies,
//! however many proxies, shards and replicas they cross. The `PutOk` or `GetOk` that comes
//! back with tag `n` answers request `n`.
//!
//! ```text
//! curl -X PUT http://127.0.0.1:8080/apple -d 'apple pie'   # 200 stored apple
//! curl http://127.0.0.1:8080/apple                          # 200 apple pie (404 if absent)
//! ```
//!
//! The address is `127.0.0.1:8080`, or `$WEBKVS_ADDR`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ovid::{Bindings, Context, Message};
use serde::{Deserialize, Serialize};

/// Store `value` under `key` (the same message as webkvs.ovid's `Put`).
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
pub struct Put {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// `key` is stored.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
pub struct PutOk {
    /// The key.
    pub key: String,
}

/// What is stored under `key`?
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
pub struct Get {
    /// The key.
    pub key: String,
}

/// What is stored under `key`, if anything.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
pub struct GetOk {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Option<String>,
}

/// An HTTP request, from the server thread to the agent (its tag is the request's number).
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
pub struct HttpCall {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path without its leading `/`: the key.
    pub key: String,
    /// The request body.
    pub body: String,
}

/// Requests waiting for their answer, by number.
type Waiting = Arc<Mutex<HashMap<u64, tiny_http::Request>>>;

/// The HTTP gateway agent; see the crate docs.
pub struct HttpFront {
    kvs: String,
    addr: String,
    waiting: Waiting,
}

impl HttpFront {
    /// The agent, sending to whatever `kvs` is wired to.
    pub fn from_bindings(uses: &Bindings) -> Self {
        let addr = std::env::var("WEBKVS_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_string());
        HttpFront {
            kvs: uses.get("kvs"),
            addr,
            waiting: Waiting::default(),
        }
    }

    /// Answers request `tag` (if it is still waiting).
    fn respond(&self, tag: u64, status: u16, text: String) {
        let request = self.waiting.lock().expect("poisoned").remove(&tag);
        if let Some(request) = request {
            let response = tiny_http::Response::from_string(text + "\n").with_status_code(status);
            if let Err(e) = request.respond(response) {
                tracing::debug!(error = %e, "HTTP client went away");
            }
        }
    }
}

#[ovid::agent(no_snapshot)]
impl HttpFront {
    /// Starts the HTTP server thread.
    fn on_start(&mut self, ctx: &mut Context) {
        let Some(outside) = ctx.outside() else { return };
        let server = match tiny_http::Server::http(&self.addr) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(addr = %self.addr, error = %e, "webkvs cannot serve HTTP (is the port in use?)");
                return;
            }
        };
        ctx.print(format!("webkvs: serving HTTP on http://{}", self.addr));
        let waiting = self.waiting.clone();
        std::thread::spawn(move || {
            for (n, mut request) in (1u64..).zip(server.incoming_requests()) {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let call = HttpCall {
                    method: request.method().as_str().to_string(),
                    key: request.url().trim_start_matches('/').to_string(),
                    body,
                };
                waiting.lock().expect("poisoned").insert(n, request);
                if !outside.deliver(call, n) {
                    return;
                }
            }
        });
    }

    /// Turns a request into a message to the store.
    fn on_http_call(&mut self, ctx: &mut Context, call: HttpCall) {
        if call.key.is_empty() {
            return self.respond(ctx.tag(), 400, "usage: GET or PUT /<key>".into());
        }
        match call.method.as_str() {
            "PUT" | "POST" => ctx.send(
                &self.kvs,
                Put {
                    key: call.key,
                    value: call.body,
                },
            ),
            "GET" => ctx.send(&self.kvs, Get { key: call.key }),
            other => self.respond(
                ctx.tag(),
                405,
                format!("method {other} not allowed: use GET or PUT"),
            ),
        }
    }

    /// A write is stored.
    fn on_put_ok(&mut self, ctx: &mut Context, ok: PutOk) {
        self.respond(ctx.tag(), 200, format!("stored {}", ok.key));
    }

    /// A read is answered.
    fn on_get_ok(&mut self, ctx: &mut Context, got: GetOk) {
        match got.value {
            Some(v) => self.respond(ctx.tag(), 200, v),
            None => self.respond(ctx.tag(), 404, format!("no value for {}", got.key)),
        }
    }
}
