//! `audit(path: "..")`: appends every message to a log.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ovid::{Context, Error, Payload};
use serde::{Deserialize, Serialize};

use crate::expansion::{Args, Expansion, Request, Value, pass_through, string};
use crate::proxy;
use crate::spec::{Param, ParamKind, Spec, Target};

/// The signature of `audit`.
pub const SPEC: Spec = Spec {
    name: "audit",
    target: Target::Both,
    params: &[Param {
        name: "path",
        kind: ParamKind::Str,
        positional: true,
        required: false,
        doc: "the log file (default audit.log in the box's directory)",
    }],
    preconditions: &[],
    summary: "keeps an append-only log of the messages",
};

/// `audit` in the registry ([`crate::ALL`]).
pub struct AuditTransformation;

impl crate::transformation::Transformation for AuditTransformation {
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
}

/// One `Auditor{i}` per sender, appending what passes to the log before forwarding it.
pub fn expand(req: &Request) -> Expansion {
    let config = Args::from([(
        "path".to_string(),
        Value::Str(string(req.args, "path", "audit.log")),
    )]);
    pass_through(req, "Auditor", config)
}

/// The proxy agents of this transformation, by kind: `Auditor`. It opens (creating it and its
/// directory if needed) its log when it starts; a log it cannot open is an error then.
pub fn proxies(
    _hooks: &std::sync::Arc<dyn crate::proxy::Hooks>,
) -> Vec<(&'static str, ovid::Factory)> {
    vec![(
        "Auditor",
        proxy::factory(|args| {
            Auditor::open(
                string(args, "path", "audit.log").as_ref(),
                proxy::one_target(args, "Auditor")?,
            )
        }),
    )]
}

/// One line of the audit log (JSON lines: one object per message, in the order they passed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the message passed, in milliseconds since the Unix epoch (the box's clock).
    pub time: u64,
    /// Its original sender.
    pub from: String,
    /// Where it was going (the audited agent).
    pub to: String,
    /// Its type name.
    #[serde(rename = "type")]
    pub name: String,
    /// Its correlation tag.
    pub tag: u64,
    /// The length of its postcard encoding.
    pub size: usize,
    /// That encoding, in hexadecimal.
    pub payload: String,
}

/// Appends a [`Record`] of every message to its log, written through to the file before the
/// message is passed on unchanged (as if its sender had sent it, with its tag).
pub struct Auditor {
    target: String,
    path: PathBuf,
    file: File,
    line: Vec<u8>,
}

impl Auditor {
    /// An auditor appending to the file at `path` (relative paths are under the box's working
    /// directory), creating it and its directory if needed.
    pub fn open(path: &Path, target: String) -> Result<Self, Error> {
        let cannot = |e: std::io::Error| {
            proxy::bad_config(
                "Auditor",
                format!("cannot open the audit log `{}`: {e}", path.display()),
            )
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(cannot)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(cannot)?;
        Ok(Auditor {
            target,
            path: path.to_path_buf(),
            file,
            line: Vec::new(),
        })
    }
}

impl ovid::Agent for Auditor {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let bytes = message.to_bytes()?;
        let record = Record {
            time: ctx.now_millis(),
            from: ctx.sender().to_string(),
            to: self.target.clone(),
            name: message.name().to_string(),
            tag: ctx.tag(),
            size: bytes.len(),
            payload: proxy::hex(&bytes),
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &record)
            .map_err(|e| proxy::rejected("Auditor", e))?;
        self.line.push(b'\n');
        // One write per line on a file opened for appending: lines of several auditors sharing
        // a log do not interleave. No buffer in between, so the line is with the OS now.
        self.file.write_all(&self.line).map_err(|e| {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log");
            proxy::rejected("Auditor", format!("cannot write the audit log: {e}"))
        })?;
        let from = ctx.sender_id().unwrap_or_else(|| ctx.me().into());
        let tag = ctx.tag();
        ctx.forward(&self.target, from, tag, message);
        Ok(())
    }
}
