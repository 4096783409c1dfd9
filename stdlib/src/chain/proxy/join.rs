//! The head's side of adding a member (see the module docs of [`super`]): it streams committed
//! entries to each joiner ([`CatchUp`], acknowledged by the joiner's next [`Join`]), then holds new
//! writes until the chain has drained to the tail and the joiner holds the whole log, and only
//! then asks the controller to add it (`AddBackup`).

use std::collections::BTreeMap;

use ovid::views::AddBackup;
use ovid::{CONTROLLER, Context, Id};

use super::{ChainProxy, RESEND_TICKS, Role, Stream};
use crate::chain::messages::{CatchUp, Join, Refused};
use crate::primary_backup::messages::digest;
use crate::replicate::messages::Command;
use crate::view_member::ViewMember;

/// A joiner the head streams committed entries to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Joiner {
    pub(super) nonce: u64,
    pub(super) stream: Stream,
}

/// The member the head is adding: it holds new writes until the chain has drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Adding {
    pub(super) index: usize,
    pub(super) nonce: u64,
    /// Whether `AddBackup` was sent: from then on the head waits for the controller's answer,
    /// however long (giving up could let the joiner enter the chain missing later writes).
    pub(super) asked: bool,
    /// Ticks spent draining before asking.
    pub(super) ticks: u32,
}

/// What only the head has.
#[derive(Debug, Clone, Default)]
pub(super) struct Head {
    /// Members outside the view catching up, by index.
    pub(super) joiners: BTreeMap<usize, Joiner>,
    pub(super) adding: Option<Adding>,
    /// Writes held while adding: (ingress proxy, tag, request).
    pub(super) held: Vec<(Id, u64, Command)>,
}

impl ChainProxy {
    /// On the head: streams to a joiner the committed entries it lacks.
    pub(super) fn send_catch_up(&mut self, ctx: &mut Context, i: usize) {
        let limit = self.committed.min(self.len());
        let view = self.view_number();
        let Role::Head(head) = &self.role else { return };
        let Some(j) = head.joiners.get(&i) else {
            return;
        };
        if j.stream.sent >= limit {
            return;
        }
        let from = j.stream.sent;
        let entries = self.entries(from, limit);
        ctx.send_physical(
            &self.peers[i],
            CatchUp {
                view,
                from,
                entries,
            },
        );
        if let Role::Head(head) = &mut self.role
            && let Some(j) = head.joiners.get_mut(&i)
        {
            j.stream.sent = limit;
        }
    }

    /// On the head, once the add is over (the view changed, or the controller refused, or the
    /// chain did not drain): takes the held writes.
    pub(super) fn resume(&mut self, ctx: &mut Context) {
        let held = match &mut self.role {
            Role::Head(head) => {
                head.adding = None;
                std::mem::take(&mut head.held)
            }
            _ => return,
        };
        for (ingress, tag, cmd) in held {
            ctx.set_tag(tag);
            self.on_submit(ctx, ingress, cmd);
        }
    }

    /// On the head: a joiner that holds every committed entry starts an add; once the chain has
    /// drained and the joiner holds the whole log, the controller is asked.
    pub(super) fn progress_add(&mut self, ctx: &mut Context) {
        let len = self.len();
        let committed = self.committed;
        let Some(view) = self.view.clone() else {
            return;
        };
        let Role::Head(head) = &mut self.role else {
            return;
        };
        if head.adding.is_none() {
            let ready = head.joiners.iter().find(|(i, j)| {
                j.stream.acked >= committed && !view.backups.iter().any(|m| m.index == **i as u64)
            });
            if let Some((i, j)) = ready {
                tracing::info!(proxy = %self.me, joiner = %self.peers[*i], entries = len, "chain: a joiner caught up; draining the chain to add it");
                head.adding = Some(Adding {
                    index: *i,
                    nonce: j.nonce,
                    asked: false,
                    ticks: 0,
                });
            }
        }
        let Some(a) = &mut head.adding else { return };
        let joined = head
            .joiners
            .get(&a.index)
            .is_some_and(|j| j.nonce == a.nonce && j.stream.acked >= len);
        if !a.asked && committed >= len && joined {
            a.asked = true;
            ctx.send_physical(
                CONTROLLER,
                AddBackup {
                    group: self.group.clone(),
                    view: view.number,
                    index: a.index as u64,
                    nonce: a.nonce,
                },
            );
        }
    }

    pub(super) fn on_head_tick(&mut self, ctx: &mut Context) {
        let committed = self.committed.min(self.len());
        let drain_ticks = self.timing.drain_ticks;
        let Role::Head(head) = &mut self.role else {
            return;
        };
        let resend: Vec<usize> = head
            .joiners
            .iter_mut()
            .filter_map(|(i, j)| j.stream.tick(committed).then_some(*i))
            .collect();
        // A joiner that went silent for long is forgotten: it joins again if it comes back.
        head.joiners
            .retain(|_, j| j.stream.silent < drain_ticks.saturating_mul(RESEND_TICKS));
        let mut give_up = false;
        if let Some(a) = &mut head.adding
            && !a.asked
        {
            a.ticks += 1;
            give_up = a.ticks > drain_ticks || !head.joiners.contains_key(&a.index);
        }
        for i in resend {
            self.send_catch_up(ctx, i);
        }
        if give_up {
            tracing::warn!(proxy = %self.me, "chain: the chain did not drain in time; taking writes again without adding the joiner");
            self.resume(ctx);
        }
        self.progress_add(ctx);
    }

    pub(super) fn on_join(
        &mut self,
        ctx: &mut Context,
        from: &str,
        peer: Option<usize>,
        join: Join,
    ) {
        let Some(i) = peer.filter(|i| *i != self.index) else {
            return;
        };
        if join.view != self.view_number() || !matches!(self.role, Role::Head(_)) {
            return;
        }
        let len = join.len as usize;
        if len > self.log.len() || digest(&self.log[..len]) != join.digest {
            tracing::warn!(proxy = %self.me, joiner = %self.peers[i], len, "chain: a joiner's log is not a prefix of the head's; refused");
            ctx.send_physical(from, Refused { view: join.view });
            return;
        }
        let log_len = self.len();
        if let Role::Head(head) = &mut self.role {
            let j = head.joiners.entry(i).or_insert(Joiner {
                nonce: join.nonce,
                stream: Stream::at(i, join.len),
            });
            if j.nonce != join.nonce {
                *j = Joiner {
                    nonce: join.nonce,
                    stream: Stream::at(i, join.len),
                };
            }
            j.stream.acked(join.len, log_len);
            // What was sent beyond its log may have been dropped (another view).
            j.stream.sent = j.stream.sent.min(join.len.max(j.stream.acked));
        }
        self.send_catch_up(ctx, i);
        self.progress_add(ctx);
    }
}
