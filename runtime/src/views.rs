//! Views of primary-backup groups, kept by the controller, and the failure detector that
//! drives them.
//!
//! A *group* is a set of members (agents, by index) of which one, the primary, serves and the
//! others, the backups, keep copies of its state. The controller holds one [`View`] per group:
//! a number, the primary and the backups, each with the incarnation (`nonce`) it had when it
//! entered the view. Only the controller changes a view, and every change makes a new view with
//! the next number, pushed ([`NewView`]) to every member and every watcher (the ingress proxies
//! that send to the group). Members ignore messages of other views, so a primary that has been
//! replaced cannot be heard by the backups of the newer view.
//!
//! The rules ([`ViewService`]), which the primary-backup protocol relies on:
//!
//! * The first view is made once every member has joined: member 0 is the primary, the others
//!   its backups. (Made earlier, a crash of member 0 before the others were added would leave
//!   nobody to take over, and the controller could not tell a first start from a lost log.)
//!   A member outside the view (restarted, or dropped) joins as a backup through the primary
//!   ([`AddBackup`], sent once it holds the primary's log).
//! * When the primary fails (its box is declared dead, or it joins again with a new incarnation,
//!   having lost its memory), a backup of the current view that has not failed becomes primary.
//!   If there is none, the view stays as it is: no member holds every acknowledged write, so
//!   nobody may serve.
//! * A failed backup leaves the view. A backup that is alive but does not keep up leaves it only
//!   when the primary of the current view asks ([`RemoveBackup`]), and never the last one (an
//!   acknowledged write must outlive the primary).
//!
//! The [`Failover`] part of the controller pings every registered box's manager
//! ([`Heartbeat`]) each period and declares a box dead after `misses` periods without an answer;
//! an answer, or the box registering again, makes it alive again. Boxes declared dead and view
//! changes are logged and counted (the controller's gauges `controller.boxes_declared_dead` and
//! `controller.view_changes`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::context::Context;
use crate::error::Error;
use crate::message::Payload;
pub use crate::protocol::{
    AddBackup, Heartbeat, HeartbeatAck, JoinGroup, Member, NewView, RemoveBackup, View, WatchGroup,
};
use crate::protocol::{CONTROLLER, manager_id};

/// One group, as the view service knows it.
#[derive(Debug, Clone, Default)]
struct Group {
    /// Every member's identifier, by index (empty until a member joins).
    members: Vec<String>,
    /// The latest incarnation each member joined with.
    nonces: BTreeMap<u64, u64>,
    view: Option<View>,
    /// Who gets every view besides the members.
    watchers: BTreeSet<String>,
}

/// A message the view service wants sent: (recipient, message).
pub type Out = (String, NewView);

/// The views of every group (see the module docs). A pure state machine: the controller and the
/// simulator feed it what happens and send what it returns.
#[derive(Debug, Clone, Default)]
pub struct ViewService {
    groups: BTreeMap<String, Group>,
    /// View changes made so far (first views included).
    pub changes: u64,
}

impl ViewService {
    /// An empty service.
    pub fn new() -> Self {
        ViewService::default()
    }

    /// The current view of `group`.
    pub fn view(&self, group: &str) -> Option<&View> {
        self.groups.get(group).and_then(|g| g.view.as_ref())
    }

    /// The identifier of member `index` of `group`.
    pub fn member_id(&self, group: &str, index: u64) -> Option<&str> {
        let g = self.groups.get(group)?;
        g.members.get(index as usize).map(String::as_str)
    }

    /// The current view, to every member and watcher of `group`.
    fn announce(&self, group: &str) -> Vec<Out> {
        let Some(g) = self.groups.get(group) else {
            return Vec::new();
        };
        let Some(view) = &g.view else {
            return Vec::new();
        };
        g.members
            .iter()
            .chain(g.watchers.iter())
            .map(|to| (to.clone(), NewView { view: view.clone() }))
            .collect()
    }

    /// Installs `view` as the next view of `group` and announces it.
    fn change(
        &mut self,
        group: &str,
        primary: Member,
        backups: Vec<Member>,
        why: &str,
    ) -> Vec<Out> {
        let Some(g) = self.groups.get_mut(group) else {
            return Vec::new();
        };
        let number = g.view.as_ref().map_or(1, |v| v.number + 1);
        let view = View {
            group: group.to_string(),
            number,
            primary,
            backups,
        };
        tracing::info!(%group, view = number, primary = primary.index, backups = ?view.backups.iter().map(|m| m.index).collect::<Vec<_>>(), why, "primary-backup view change");
        g.view = Some(view);
        self.changes += 1;
        self.announce(group)
    }

    /// A member joins (or joins again, after a restart): see the module docs.
    pub fn join(&mut self, j: &JoinGroup, is_dead: &dyn Fn(&str) -> bool) -> Vec<Out> {
        let g = self.groups.entry(j.group.clone()).or_default();
        if g.members.is_empty() {
            g.members = j.members.clone();
        }
        let before = g.nonces.insert(j.index, j.nonce);
        let restarted = before.is_some_and(|n| n != j.nonce);
        let mut out = Vec::new();
        match g.view.clone() {
            None if g.nonces.len() >= g.members.len() => {
                let mut all = g.nonces.iter().map(|(i, n)| Member {
                    index: *i,
                    nonce: *n,
                });
                if let Some(primary) = all.next() {
                    let backups = all.collect();
                    out = self.change(
                        &j.group,
                        primary,
                        backups,
                        "first view: every member joined",
                    );
                }
            }
            None => {}
            Some(view) => {
                let in_view = view.primary.index == j.index
                    || view.backups.iter().any(|m| m.index == j.index);
                if restarted && in_view {
                    // It lost its memory: as far as the view goes, it failed.
                    let members = g.members.clone();
                    let (index, nonce) = (j.index, j.nonce);
                    out = self.fail(&j.group, &|i, n| {
                        (i == index && n != nonce) || dead(is_dead, &members, i)
                    });
                }
            }
        }
        if out.is_empty()
            && let Some(view) = self.view(&j.group)
        {
            // Not a change: the joiner alone needs to hear the view.
            if let Some(to) = self.member_id(&j.group, j.index) {
                out.push((to.to_string(), NewView { view: view.clone() }));
            }
        }
        out
    }

    /// A watcher asks for the views of a group; it gets the current one, if any.
    pub fn watch(&mut self, w: &WatchGroup, watcher: &str) -> Vec<Out> {
        let g = self.groups.entry(w.group.clone()).or_default();
        g.watchers.insert(watcher.to_string());
        self.view(&w.group)
            .map(|v| vec![(watcher.to_string(), NewView { view: v.clone() })])
            .unwrap_or_default()
    }

    /// The view of `group` without the members for which `failed(index, nonce)` holds: a new
    /// primary if the primary failed (none, and no change, if no backup is left).
    fn fail(&mut self, group: &str, failed: &dyn Fn(u64, u64) -> bool) -> Vec<Out> {
        let Some(view) = self.view(group).cloned() else {
            return Vec::new();
        };
        let live: Vec<Member> = view
            .backups
            .iter()
            .copied()
            .filter(|m| !failed(m.index, m.nonce))
            .collect();
        if failed(view.primary.index, view.primary.nonce) {
            let Some((first, rest)) = live.split_first() else {
                tracing::error!(%group, view = view.number, "primary-backup: the primary failed and no backup of its view is alive; the group cannot serve until it comes back");
                return Vec::new();
            };
            return self.change(group, *first, rest.to_vec(), "the primary failed");
        }
        if live.len() < view.backups.len() {
            return self.change(group, view.primary, live, "a backup failed");
        }
        Vec::new()
    }

    /// Some agents died (their box was declared dead): every group changes views accordingly.
    pub fn failed(&mut self, is_dead: &dyn Fn(&str) -> bool) -> Vec<Out> {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        let mut out = Vec::new();
        for group in names {
            let members = self.groups[&group].members.clone();
            out.extend(self.fail(&group, &|i, _| dead(is_dead, &members, i)));
        }
        out
    }

    /// The primary of the current view (the sender, `from`) asks to drop a backup.
    pub fn remove_backup(&mut self, r: &RemoveBackup, from: &str) -> Vec<Out> {
        let Some(view) = self.view(&r.group).cloned() else {
            return Vec::new();
        };
        if view.number != r.view
            || self.member_id(&r.group, view.primary.index) != Some(from)
            || !view.backups.iter().any(|m| m.index == r.index)
        {
            return Vec::new();
        }
        if view.backups.len() <= 1 {
            tracing::warn!(group = %r.group, backup = r.index, "primary-backup: the last backup does not keep up; kept (the primary waits for it)");
            return Vec::new();
        }
        let backups = view
            .backups
            .iter()
            .copied()
            .filter(|m| m.index != r.index)
            .collect();
        self.change(
            &r.group,
            view.primary,
            backups,
            "the primary dropped a slow backup",
        )
    }

    /// The primary of the current view (the sender, `from`) asks to add a backup that caught
    /// up. Answered to the primary with the current view, changed or not.
    pub fn add_backup(
        &mut self,
        a: &AddBackup,
        from: &str,
        is_dead: &dyn Fn(&str) -> bool,
    ) -> Vec<Out> {
        let Some(view) = self.view(&a.group).cloned() else {
            return Vec::new();
        };
        if self.member_id(&a.group, view.primary.index) != Some(from) {
            return Vec::new();
        }
        let current_nonce = self
            .groups
            .get(&a.group)
            .and_then(|g| g.nonces.get(&a.index))
            .copied();
        let acceptable = view.number == a.view
            && a.index != view.primary.index
            && !view.backups.iter().any(|m| m.index == a.index)
            && current_nonce == Some(a.nonce)
            && self
                .member_id(&a.group, a.index)
                .is_some_and(|id| !is_dead(id));
        if acceptable {
            let mut backups = view.backups.clone();
            backups.push(Member {
                index: a.index,
                nonce: a.nonce,
            });
            backups.sort_by_key(|m| m.index);
            return self.change(&a.group, view.primary, backups, "a backup caught up");
        }
        vec![(from.to_string(), NewView { view })]
    }
}

/// Whether member `index` (of a group whose members are `members`) is dead.
fn dead(is_dead: &dyn Fn(&str) -> bool, members: &[String], index: u64) -> bool {
    members.get(index as usize).is_some_and(|id| is_dead(id))
}

/// The controller's failure detector and view service (see the module docs).
#[derive(Debug)]
pub struct Failover {
    /// The views.
    pub service: ViewService,
    /// Heartbeat period (zero: no failure detector).
    period: Duration,
    /// Periods without an answer before a box is declared dead.
    misses: u32,
    /// What the detector knows of each registered box, by name.
    health: BTreeMap<String, Health>,
    seq: u64,
    /// Boxes declared dead so far.
    pub declared_dead: u64,
}

/// The failure detector's record of one box.
#[derive(Debug, Clone, Copy, Default)]
struct Health {
    /// A heartbeat is unanswered.
    outstanding: bool,
    /// Periods in a row with a heartbeat unanswered.
    missed: u32,
    dead: bool,
}

/// A box declared dead is pinged once every this many periods.
const DEAD_PING_EVERY: u64 = 10;

/// The name of the controller's failure-detector timer.
const DETECT: &str = "controller::failure_detector";

impl Default for Failover {
    fn default() -> Self {
        Failover {
            service: ViewService::new(),
            period: Duration::from_millis(100),
            misses: 3,
            health: BTreeMap::new(),
            seq: 0,
            declared_dead: 0,
        }
    }
}

impl Failover {
    /// A failure detector that pings every `period` and declares a box dead after `misses`
    /// periods without an answer (a zero period turns it off).
    pub fn new(period: Duration, misses: u32) -> Self {
        Failover {
            period,
            misses: misses.max(1),
            ..Failover::default()
        }
    }

    /// Whether the box named `name` is declared dead.
    pub fn is_box_dead(&self, name: &str) -> bool {
        self.health.get(name).is_some_and(|h| h.dead)
    }

    /// Arms the detector (from the controller's `on_start`).
    pub fn start(&mut self, ctx: &mut Context) {
        if !self.period.is_zero() {
            ctx.set_timer(DETECT, self.period);
        }
    }

    /// A box registered: it is alive (again).
    pub fn registered(&mut self, name: &str) {
        if self.health.get(name).is_some_and(|h| h.dead) {
            tracing::info!(box_name = %name, "box registered again: alive");
        }
        self.health.insert(name.to_string(), Health::default());
    }

    fn send(ctx: &mut Context, out: Vec<Out>) {
        for (to, view) in out {
            ctx.send_physical(&to, view);
        }
    }

    fn gauges(&self, ctx: &mut Context) {
        ctx.set_metric("controller.boxes_declared_dead", self.declared_dead);
        ctx.set_metric("controller.view_changes", self.service.changes);
    }

    /// Handles the messages of views and heartbeats; gives back any other message.
    /// `running` maps each running physical agent to its box.
    pub fn handle(
        &mut self,
        ctx: &mut Context,
        message: Payload,
        running: &BTreeMap<String, String>,
    ) -> Result<Option<Payload>, Error> {
        let health = &self.health;
        let is_dead = |id: &str| {
            running
                .get(id)
                .and_then(|b| health.get(b))
                .is_some_and(|h| h.dead)
        };
        let out = if message.is::<JoinGroup>() {
            let j = message.decode::<JoinGroup>()?;
            self.service.join(&j, &is_dead)
        } else if message.is::<WatchGroup>() {
            let w = message.decode::<WatchGroup>()?;
            let watcher = ctx.sender().to_string();
            self.service.watch(&w, &watcher)
        } else if message.is::<RemoveBackup>() {
            let r = message.decode::<RemoveBackup>()?;
            let from = ctx.sender().to_string();
            self.service.remove_backup(&r, &from)
        } else if message.is::<AddBackup>() {
            let a = message.decode::<AddBackup>()?;
            let from = ctx.sender().to_string();
            self.service.add_backup(&a, &from, &is_dead)
        } else if message.is::<HeartbeatAck>() {
            let name = ctx
                .sender()
                .strip_prefix("$box/")
                .unwrap_or_default()
                .to_string();
            if let Some(h) = self.health.get_mut(&name) {
                if h.dead {
                    tracing::info!(box_name = %name, "box answers heartbeats again: alive");
                }
                *h = Health::default();
            }
            Vec::new()
        } else {
            return Ok(Some(message));
        };
        Self::send(ctx, out);
        self.gauges(ctx);
        Ok(None)
    }

    /// The detector's timer: counts the unanswered heartbeats, declares boxes dead, changes the
    /// views they hold a member of, and pings every registered box again. `boxes` are the
    /// registered boxes; the controller's own is not pinged. Returns whether `name` was its
    /// timer.
    pub fn on_timer(
        &mut self,
        ctx: &mut Context,
        name: &str,
        boxes: &BTreeMap<String, String>,
        running: &BTreeMap<String, String>,
    ) -> bool {
        if name != DETECT {
            return false;
        }
        let own = running.get(CONTROLLER);
        let mut newly_dead = false;
        self.seq += 1;
        for b in boxes.keys().filter(|b| Some(*b) != own) {
            let h = self.health.entry(b.clone()).or_default();
            if h.outstanding {
                h.missed += 1;
                if h.missed >= self.misses && !h.dead {
                    h.dead = true;
                    newly_dead = true;
                    self.declared_dead += 1;
                    tracing::warn!(box_name = %b, missed = h.missed, period_ms = self.period.as_millis() as u64, "box declared dead");
                }
            }
            // A dead box is asked ten times less often: what is sent to it waits in the
            // transport's queue until it comes back.
            if !h.dead || self.seq.is_multiple_of(DEAD_PING_EVERY) {
                h.outstanding = true;
                ctx.send_physical(&manager_id(b), Heartbeat { seq: self.seq });
            }
        }
        if newly_dead {
            let health = &self.health;
            let is_dead = |id: &str| {
                running
                    .get(id)
                    .and_then(|b| health.get(b))
                    .is_some_and(|h| h.dead)
            };
            let out = self.service.failed(&is_dead);
            Self::send(ctx, out);
        }
        self.gauges(ctx);
        ctx.set_timer(DETECT, self.period);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Effect;

    fn members() -> Vec<String> {
        (0..3).map(|i| format!("G/P{i}")).collect()
    }

    fn join(s: &mut ViewService, index: u64, nonce: u64, dead: &dyn Fn(&str) -> bool) -> Vec<Out> {
        s.join(
            &JoinGroup {
                group: "G".into(),
                members: members(),
                index,
                nonce,
            },
            dead,
        )
    }

    const ALIVE: &dyn Fn(&str) -> bool = &|_| false;

    fn m(index: u64, nonce: u64) -> Member {
        Member { index, nonce }
    }

    /// A group of three, all joined (nonces 10, 11, 12), watched by `ingress`.
    fn started() -> ViewService {
        let mut s = ViewService::new();
        assert!(
            s.watch(&WatchGroup { group: "G".into() }, "ingress")
                .is_empty()
        );
        for i in [2, 1] {
            let out = join(&mut s, i, 10 + i, ALIVE);
            assert!(out.is_empty(), "no view before every member joined");
        }
        let out = join(&mut s, 0, 10, ALIVE);
        let v = s.view("G").unwrap().clone();
        assert_eq!(
            (v.number, v.primary, v.backups.clone()),
            (1, m(0, 10), vec![m(1, 11), m(2, 12)])
        );
        let to: Vec<&str> = out.iter().map(|(to, _)| to.as_str()).collect();
        assert_eq!(to, ["G/P0", "G/P1", "G/P2", "ingress"]);
        s
    }

    #[test]
    fn a_dead_primary_is_replaced_by_a_live_backup_of_its_view() {
        let mut s = started();
        let out = s.failed(&|id| id == "G/P0" || id == "G/P1");
        let v = s.view("G").unwrap();
        assert_eq!(
            (v.number, v.primary, v.backups.clone()),
            (2, m(2, 12), vec![])
        );
        assert_eq!(out.len(), 4, "members and watchers hear of it");
        assert!(out.iter().all(|(_, nv)| nv.view.number == 2));
        // The last one dies too: nobody holds every acknowledged write; no new view.
        assert!(s.failed(&|_| true).is_empty());
        assert_eq!(s.view("G").unwrap().number, 2);
        assert_eq!(s.changes, 2);
    }

    #[test]
    fn a_member_that_joins_again_has_lost_its_memory() {
        let mut s = started();
        // Backup 1 restarted: it leaves the view and hears the view it is not in.
        join(&mut s, 1, 99, ALIVE);
        let v = s.view("G").unwrap().clone();
        assert_eq!(
            (v.number, v.primary, v.backups.clone()),
            (2, m(0, 10), vec![m(2, 12)])
        );
        // The primary restarted: its backup takes over.
        join(&mut s, 0, 98, ALIVE);
        let v = s.view("G").unwrap().clone();
        assert_eq!((v.number, v.primary), (3, m(2, 12)));
        // The same incarnation joining again changes nothing; it gets the view.
        let out = join(&mut s, 2, 12, ALIVE);
        assert_eq!(out.len(), 1);
        assert_eq!(s.view("G").unwrap().number, 3);
    }

    #[test]
    fn only_the_current_primary_removes_and_adds_backups() {
        let mut s = started();
        let remove = |view, index| RemoveBackup {
            group: "G".into(),
            view,
            index,
        };
        assert!(
            s.remove_backup(&remove(1, 2), "G/P1").is_empty(),
            "not the primary"
        );
        assert!(
            s.remove_backup(&remove(0, 2), "G/P0").is_empty(),
            "a stale view"
        );
        assert!(!s.remove_backup(&remove(1, 2), "G/P0").is_empty());
        assert_eq!(s.view("G").unwrap().backups, vec![m(1, 11)]);
        assert!(
            s.remove_backup(&remove(2, 1), "G/P0").is_empty(),
            "never the last backup"
        );

        let add = |view, nonce| AddBackup {
            group: "G".into(),
            view,
            index: 2,
            nonce,
        };
        // Refused (stale view, another incarnation, a dead box): the primary hears the view.
        let p2_dead: &dyn Fn(&str) -> bool = &|id| id == "G/P2";
        for (a, dead) in [
            (add(1, 12), ALIVE),
            (add(2, 7), ALIVE),
            (add(2, 12), p2_dead),
        ] {
            let out = s.add_backup(&a, "G/P0", dead);
            assert_eq!(out.len(), 1);
            assert_eq!((out[0].0.as_str(), out[0].1.view.number), ("G/P0", 2));
        }
        s.add_backup(&add(2, 12), "G/P0", ALIVE);
        let v = s.view("G").unwrap();
        assert_eq!((v.number, v.backups.clone()), (3, vec![m(1, 11), m(2, 12)]));
    }

    #[test]
    fn the_detector_declares_a_silent_box_dead_and_fails_over() {
        let mut f = Failover::new(Duration::from_millis(100), 3);
        let mut ctx = Context::new(CONTROLLER);
        let boxes: BTreeMap<String, String> =
            [("b0", "a0"), ("b1", "a1"), ("b2", "a2"), ("c", "ac")]
                .into_iter()
                .map(|(b, a)| (b.to_string(), a.to_string()))
                .collect();
        let mut running: BTreeMap<String, String> = (0..3)
            .map(|i| (format!("G/P{i}"), format!("b{i}")))
            .collect();
        running.insert(CONTROLLER.into(), "c".into());
        for i in 0..3 {
            let j = JoinGroup {
                group: "G".into(),
                members: members(),
                index: i,
                nonce: 10 + i,
            };
            ctx.begin(Some(format!("G/P{i}").into()), 0);
            assert!(
                f.handle(&mut ctx, Payload::new(j), &running)
                    .unwrap()
                    .is_none()
            );
        }
        ctx.take_effects();
        let heartbeats = |ctx: &mut Context| {
            ctx.take_effects()
                .into_iter()
                .filter_map(|e| match e {
                    Effect::SendPhysical { to, payload } if payload.is::<Heartbeat>() => {
                        Some(to.to_string())
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        for round in 0..4 {
            ctx.begin(None, 0);
            assert!(f.on_timer(&mut ctx, DETECT, &boxes, &running));
            let pinged = heartbeats(&mut ctx);
            // The controller's own box is not pinged, and a dead box only every tenth period.
            if round < 3 {
                assert_eq!(pinged, ["$box/b0", "$box/b1", "$box/b2"]);
            } else {
                assert_eq!(pinged, ["$box/b1", "$box/b2"]);
            }
            // b1 and b2 answer, b0 (the primary's) does not.
            for b in ["b1", "b2"] {
                ctx.begin(Some(manager_id(b).into()), 0);
                let ack = Payload::new(HeartbeatAck { seq: round + 1 });
                assert!(f.handle(&mut ctx, ack, &running).unwrap().is_none());
            }
            assert_eq!(f.is_box_dead("b0"), round >= 3, "round {round}");
        }
        assert_eq!(f.declared_dead, 1);
        let v = f.service.view("G").unwrap();
        assert_eq!((v.number, v.primary), (2, m(1, 11)));
        f.registered("b0");
        assert!(!f.is_box_dead("b0"));
    }
}
