//! `monitor`: counts messages and their rates on each channel, exposed as metrics.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use ovid::{Context, Error, Payload};
use serde::{Deserialize, Serialize};

use crate::expansion::{Args, Expansion, Request, int, pass_through, string};
use crate::proxy;
use crate::spec::{Param, ParamKind, Spec, Target};

/// The signature of `monitor`.
pub const SPEC: Spec = Spec {
    name: "monitor",
    target: Target::Both,
    params: &[Param {
        name: "every",
        kind: ParamKind::Duration,
        positional: true,
        required: false,
        doc: "how often the counts are published among the box's counters and logged (default 1s)",
    }],
    preconditions: &[],
    summary: "counts messages and rates per channel",
};

/// `monitor` in the registry ([`crate::ALL`]).
pub struct MonitorTransformation;

impl crate::transformation::Transformation for MonitorTransformation {
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

/// One `Monitor{i}` per sender, counting what passes on that channel before forwarding it.
pub fn expand(req: &Request) -> Expansion {
    let every = crate::expansion::int(req.args, "every", 1000);
    pass_through(
        req,
        "Monitor",
        Args::from([("report_ms".to_string(), crate::expansion::Value::Int(every))]),
    )
}

/// The proxy agents of this transformation, by kind: `Monitor`.
pub fn proxies(
    _hooks: &std::sync::Arc<dyn crate::proxy::Hooks>,
) -> Vec<(&'static str, ovid::Factory)> {
    vec![(
        "Monitor",
        proxy::factory(|args| {
            let window_ms = int(args, "window_ms", 10_000);
            let report_ms = int(args, "report_ms", 10_000);
            if window_ms < 1 || report_ms < 0 {
                return Err(proxy::bad_config(
                    "Monitor",
                    "window_ms must be at least 1 and report_ms at least 0",
                ));
            }
            Ok(Monitor {
                target: proxy::one_target(args, "Monitor")?,
                sender: string(args, "sender", ""),
                window_ms: window_ms as u64,
                report_ms: report_ms as u64,
                types: BTreeMap::new(),
            })
        }),
    )]
}

/// Ask a monitor (at its physical identifier, `X/Monitor0`) for its counts; it answers with a
/// [`MonitorReport`] and does not pass the question on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ovid::Message)]
#[message(name = "ovid.monitor.MonitorQuery")]
pub struct MonitorQuery;

/// A monitor's counts, per message type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ovid::Message)]
#[message(name = "ovid.monitor.MonitorReport")]
pub struct MonitorReport {
    /// The sender whose channel the monitor watches (from its configuration).
    pub sender: String,
    /// The window the rates are measured over, in milliseconds.
    pub window_ms: u64,
    /// One entry per message type seen, by name.
    pub types: Vec<TypeStats>,
}

impl MonitorReport {
    /// The entry for the message type `name`, if any was seen.
    pub fn get(&self, name: &str) -> Option<&TypeStats> {
        self.types.iter().find(|t| t.name == name)
    }
}

/// The counts of one message type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeStats {
    /// The type name.
    pub name: String,
    /// Messages since the monitor started.
    pub messages: u64,
    /// Bytes (of their postcard encoding) since the monitor started.
    pub bytes: u64,
    /// Messages per second over the last window.
    pub rate: f64,
    /// Bytes per second over the last window.
    pub byte_rate: f64,
}

/// Counts over a sliding window, in ten buckets (so memory does not grow with the rate).
#[derive(Debug, Default)]
struct Window {
    /// (bucket start in ms, messages, bytes), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
}

impl Window {
    fn add(&mut self, now: u64, window_ms: u64, bytes: u64) {
        let width = (window_ms / 10).max(1);
        let start = now - now % width;
        match self.buckets.back_mut() {
            Some(b) if b.0 == start => {
                b.1 += 1;
                b.2 += bytes;
            }
            _ => self.buckets.push_back((start, 1, bytes)),
        }
        self.trim(now, window_ms);
    }

    fn trim(&mut self, now: u64, window_ms: u64) {
        while self.buckets.front().is_some_and(|b| b.0 + window_ms <= now) {
            self.buckets.pop_front();
        }
    }

    /// Messages and bytes per second over the window ending at `now`.
    fn rates(&mut self, now: u64, window_ms: u64) -> (f64, f64) {
        self.trim(now, window_ms);
        let (m, b) = self
            .buckets
            .iter()
            .fold((0, 0), |(m, b), x| (m + x.1, b + x.2));
        let secs = window_ms as f64 / 1000.0;
        (m as f64 / secs, b as f64 / secs)
    }
}

#[derive(Debug, Default)]
struct Counts {
    messages: u64,
    bytes: u64,
    window: Window,
}

/// The timer of the periodic log line.
const REPORT: &str = "report";

/// Counts the messages of one channel (per type: how many, how many bytes, the rate over a
/// window), answers [`MonitorQuery`], logs the counts at info level every `report_ms`, and
/// passes every other message on unchanged, as if its sender had sent it, with its tag.
pub struct Monitor {
    target: String,
    sender: String,
    window_ms: u64,
    report_ms: u64,
    types: BTreeMap<String, Counts>,
}

impl Monitor {
    /// The counts now (`now`: milliseconds since the epoch, as the context gives them).
    pub fn report(&mut self, now: u64) -> MonitorReport {
        let window_ms = self.window_ms;
        let types = self
            .types
            .iter_mut()
            .map(|(name, c)| {
                let (rate, byte_rate) = c.window.rates(now, window_ms);
                TypeStats {
                    name: name.clone(),
                    messages: c.messages,
                    bytes: c.bytes,
                    rate,
                    byte_rate,
                }
            })
            .collect();
        MonitorReport {
            sender: self.sender.clone(),
            window_ms,
            types,
        }
    }
}

impl ovid::Agent for Monitor {
    fn on_start(&mut self, ctx: &mut Context) {
        if self.report_ms > 0 {
            ctx.set_timer(REPORT, Duration::from_millis(self.report_ms));
        }
    }

    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        if message.is::<MonitorQuery>() {
            let report = self.report(ctx.now_millis());
            ctx.reply(report);
            return Ok(());
        }
        let size = message.to_bytes()?.len() as u64;
        let now = ctx.now_millis();
        let counts = match self.types.get_mut(message.name()) {
            Some(c) => c,
            None => self.types.entry(message.name().to_string()).or_default(),
        };
        counts.messages += 1;
        counts.bytes += size;
        counts.window.add(now, self.window_ms, size);
        let from = ctx.sender_id().unwrap_or_else(|| ctx.me().into());
        let tag = ctx.tag();
        ctx.forward(&self.target, from, tag, message);
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        if name != REPORT {
            return;
        }
        let report = self.report(ctx.now_millis());
        let me = ctx.me().to_string();
        for t in &report.types {
            ctx.set_metric(format!("monitor.{me}.{}.messages", t.name), t.messages);
            ctx.set_metric(format!("monitor.{me}.{}.bytes", t.name), t.bytes);
            ctx.set_metric(
                format!("monitor.{me}.{}.per_second", t.name),
                t.rate.round() as u64,
            );
        }
        for t in report.types.iter().filter(|t| t.rate > 0.0) {
            tracing::info!(
                monitor = %ctx.me(), sender = %report.sender, message = %t.name, messages = t.messages, bytes = t.bytes,
                rate = t.rate, byte_rate = t.byte_rate, window_ms = report.window_ms, "channel counts"
            );
        }
        ctx.set_timer(REPORT, Duration::from_millis(self.report_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_old_traffic() {
        let mut w = Window::default();
        for t in 0..100 {
            w.add(10_000 + t * 10, 1000, 5);
        }
        // 100 messages of 5 bytes within the last second.
        assert_eq!(w.rates(10_990, 1000), (100.0, 500.0));
        assert!(w.buckets.len() <= 11);
        assert_eq!(w.rates(12_500, 1000), (0.0, 0.0));
        assert!(w.buckets.is_empty());
    }
}
