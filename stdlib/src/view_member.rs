//! What the members of a group driven by the controller's view service share (primary_backup's
//! copies, chain's members): how every message a member receives is routed — its copy's
//! replies, requests from ingress proxies, the controller's views, status questions, and its
//! peers' messages, which are held back while they name a view this member has not installed.
//! Each transformation says what to do with each kind ([`ViewMember`]); [`dispatch`] is the
//! one `on_message` both run.

use ovid::views::{NewView, View};
use ovid::{CONTROLLER, Context, Error, Id, Message, Payload};

use crate::replicate::messages::{Command, Reply, Submit};

/// At most this many messages of views not yet installed are kept (the oldest go first; the
/// senders repeat what matters).
const EARLY_LIMIT: usize = 256;

/// A message between the members of a group, stamped with the sender's view.
pub(crate) trait PeerMessage: Sized {
    /// The message, if it is one of the members' own (`None` for any other).
    fn decode(message: Payload) -> Result<Option<Self>, Error>;
    /// The view it was sent in.
    fn view(&self) -> u64;
}

/// Declares a group's peer messages: an enum with one variant per message type (each type
/// has a `view` field), and its [`PeerMessage`] implementation.
macro_rules! peer_messages {
    ($(#[$doc:meta])* $name:ident { $($m:ident),* $(,)? }) => {
        $(#[$doc])*
        pub(crate) enum $name {
            $($m($m)),*
        }

        impl $crate::view_member::PeerMessage for $name {
            fn decode(message: ovid::Payload) -> Result<Option<Self>, ovid::Error> {
                $(if message.is::<$m>() {
                    return Ok(Some($name::$m(message.decode()?)));
                })*
                Ok(None)
            }

            fn view(&self) -> u64 {
                match self {
                    $($name::$m(m) => m.view),*
                }
            }
        }
    };
}
pub(crate) use peer_messages;

/// Peer messages sent in a view this member has not installed yet, kept until it has.
pub(crate) struct Early<P> {
    held: Vec<(String, P)>,
    /// The highest view the controller was asked about, so that it is asked once per view.
    asked: u64,
}

impl<P> Default for Early<P> {
    fn default() -> Self {
        Early {
            held: Vec::new(),
            asked: 0,
        }
    }
}

/// What one member of a view-driven group does with each kind of message it receives.
pub(crate) trait ViewMember {
    /// Its peers' messages.
    type Peer: PeerMessage;
    /// The question of its status.
    type Query: Message;
    /// Its answer to it.
    type Status: Message;

    /// Its identifier (for errors).
    fn me(&self) -> &Id;
    /// The copy it drives (its replies come from there, or from under it).
    fn copy(&self) -> &Id;
    /// A reply of its copy to the message tagged `tag`.
    fn on_copy_reply(&mut self, ctx: &mut Context, tag: u64, reply: Reply);
    /// A request from the ingress proxy `ingress`.
    fn on_submit(&mut self, ctx: &mut Context, ingress: Id, cmd: Command);
    /// A view the controller pushed.
    fn on_view(&mut self, ctx: &mut Context, view: View);
    /// The number of the view installed here (0: none yet).
    fn view_number(&self) -> u64;
    /// A peer's message stamped with a view installed here (or an older one).
    fn on_peer(&mut self, ctx: &mut Context, from: &str, m: Self::Peer);
    /// Asks the controller for the group's current view.
    fn join_group(&self, ctx: &mut Context);
    /// Its status.
    fn status(&self) -> Self::Status;
    /// The peer messages it holds back.
    fn early(&mut self) -> &mut Early<Self::Peer>;
}

/// The `on_message` of a group member (see the module docs).
pub(crate) fn dispatch<M: ViewMember>(
    member: &mut M,
    ctx: &mut Context,
    message: Payload,
) -> Result<(), Error> {
    // From the copy, or from what it was transformed into (`X/Copy0 |> monitor`).
    if ovid::routing::is_refinement(member.copy(), ctx.sender()) {
        let reply = Reply {
            name: message.name().to_string(),
            bytes: message.to_bytes()?.to_vec(),
        };
        member.on_copy_reply(ctx, ctx.tag(), reply);
    } else if message.is::<Submit>() {
        let submit = message.decode::<Submit>()?;
        let ingress = ctx
            .sender_id()
            .ok_or_else(|| Error::Invalid("a request without a sender".into()))?;
        member.on_submit(ctx, ingress, submit.command);
    } else if message.is::<NewView>() {
        if ctx.sender() == CONTROLLER {
            let v = message.decode::<NewView>()?;
            member.on_view(ctx, v.view);
            // What peers sent in this view before it was installed here.
            let now = member.view_number();
            let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut member.early().held)
                .into_iter()
                .partition(|(_, m)| m.view() <= now);
            member.early().held = later;
            for (from, m) in ready {
                member.on_peer(ctx, &from, m);
            }
        }
    } else if message.is::<M::Query>() {
        let status = member.status();
        ctx.reply(status);
    } else {
        let name = message.name().to_string();
        let Some(m) = M::Peer::decode(message)? else {
            return Err(Error::UnknownMessage {
                agent: member.me().to_string(),
                name,
            });
        };
        let from = ctx.sender().to_string();
        if m.view() > member.view_number() {
            // Sent in a view not heard of yet: kept until it is, and the controller asked
            // (rather than waiting for its news, or for the peer to send it again).
            if m.view() > member.early().asked {
                member.early().asked = m.view();
                member.join_group(ctx);
            }
            let early = member.early();
            if early.held.len() >= EARLY_LIMIT {
                early.held.remove(0);
            }
            early.held.push((from, m));
        } else {
            member.on_peer(ctx, &from, m);
        }
    }
    Ok(())
}
