//! `PrimaryBackupIngressProxy`: replicate's ingress proxy (client sessions, retries), plus the
//! controller's views: it watches its group, and when a newer view names a new primary it sends
//! the open requests there at once. Views older than the newest it has seen are ignored.

use ovid::views::{NewView, WatchGroup};
use ovid::{Agent, CONTROLLER, Context, Error, Payload};

use super::proxy::group_of;
use crate::expansion::Args;
use crate::replicate::ReplicateIngressProxy;

/// The proxy's kind, as the expansion names it.
pub const KIND: &str = "PrimaryBackupIngressProxy";

const WATCH: &str = "primary_backup::watch";

/// How often it asks the controller again while it has no view (the controller may start
/// after it).
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The ingress proxy of `primary_backup` (see the module docs).
pub struct PrimaryBackupIngressProxy {
    inner: ReplicateIngressProxy,
    group: String,
    /// The newest view number seen (0: none).
    view: u64,
}

impl PrimaryBackupIngressProxy {
    /// A proxy from its configuration: replicate's ingress proxy's (`targets` = the
    /// primary-backup proxies, by index, and its optional timing).
    pub fn from_config(args: &Args) -> Result<Self, Error> {
        let inner = ReplicateIngressProxy::from_config(args)?;
        let group = group_of(&inner.targets()[0]);
        Ok(PrimaryBackupIngressProxy {
            inner,
            group,
            view: 0,
        })
    }

    fn watch(&self, ctx: &mut Context) {
        ctx.send_physical(
            CONTROLLER,
            WatchGroup {
                group: self.group.clone(),
            },
        );
    }
}

impl Agent for PrimaryBackupIngressProxy {
    fn on_start(&mut self, ctx: &mut Context) {
        self.inner.on_start(ctx);
        self.watch(ctx);
        ctx.set_timer(WATCH, WATCH_EVERY);
    }

    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        if message.is::<NewView>() {
            if ctx.sender() == CONTROLLER {
                let v = message.decode::<NewView>()?.view;
                if v.group == self.group && v.number > self.view {
                    self.view = v.number;
                    self.inner.point_at(ctx, v.primary.index as usize);
                }
            }
            return Ok(());
        }
        self.inner.on_message(ctx, message)
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        if name == WATCH {
            if self.view == 0 {
                self.watch(ctx);
                ctx.set_timer(WATCH, WATCH_EVERY);
            }
            return;
        }
        self.inner.on_timer(ctx, name);
    }
}
