//! Endpoints: how code that is not an agent (a test, a benchmark, an HTTP gateway, `main`)
//! talks to agents.
//!
//! An endpoint registers an identifier in a box like an agent does, so agents can reply to it,
//! but it is driven from the outside with `async` calls instead of handlers.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::Error;
use crate::message::{Envelope, Id, Message, Payload};
use crate::metrics::Metrics;
use crate::routing::{Art, Router};

/// An identifier in a box that async code sends from and receives at; see the module docs.
#[derive(Debug)]
pub struct Endpoint {
    pub(crate) id: Id,
    pub(crate) router: Arc<Router>,
    pub(crate) inbox: mpsc::UnboundedReceiver<Envelope>,
    pub(crate) art: Art,
    pub(crate) generation: u64,
}

impl Endpoint {
    /// The endpoint's (physical) identifier.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends `message` to `to`, as this endpoint knows it (an ART miss asks the controller).
    pub async fn send<M: Message>(&mut self, to: &str, message: M) -> Result<(), Error> {
        let physical = match self.art.get(to) {
            Some(p) => p.clone(),
            None => {
                let ident: Id = to.into();
                let p = self
                    .router
                    .resolve_art(&self.id, &ident)
                    .await
                    .ok_or_else(|| Error::UnknownIdentifier(to.to_string()))?;
                self.art.insert(ident, p.clone())?;
                p
            }
        };
        self.send_physical(&physical, message);
        Ok(())
    }

    /// Sends an already wrapped payload to `to` (resolved by the ART) with a correlation tag.
    pub async fn send_payload(
        &mut self,
        to: &str,
        payload: Payload,
        tag: u64,
    ) -> Result<(), Error> {
        let physical = self.resolve(to).await?;
        self.send_payload_physical(&physical, payload, tag);
        Ok(())
    }

    /// Sends an already wrapped payload straight to a physical identifier, with a tag.
    pub fn send_payload_physical(&self, to: &str, payload: Payload, tag: u64) {
        Metrics::inc(&self.router.metrics.messages_out);
        self.router.route(Envelope {
            from: self.id.clone(),
            to: to.into(),
            payload,
            tag,
        });
    }

    /// Sends `message` straight to a physical identifier.
    pub fn send_physical<M: Message>(&self, to: &str, message: M) {
        Metrics::inc(&self.router.metrics.messages_out);
        self.router.route(Envelope {
            from: self.id.clone(),
            to: to.into(),
            payload: Payload::new(message),
            tag: 0,
        });
    }

    /// Sends `message` straight to a physical identifier given as an [`Id`] (no allocation).
    pub fn send_to_id<M: Message>(&self, to: &Id, message: M) {
        Metrics::inc(&self.router.metrics.messages_out);
        self.router.route(Envelope {
            from: self.id.clone(),
            to: to.clone(),
            payload: Payload::new(message),
            tag: 0,
        });
    }

    /// The next envelope for this endpoint (`None` once the box has shut down).
    pub async fn recv(&mut self) -> Option<Envelope> {
        self.inbox.recv().await
    }

    /// The next message, decoded as an `R`, with its sender.
    pub async fn recv_message<R: Message>(&mut self) -> Result<(Id, R), Error> {
        let env = self.recv().await.ok_or(Error::Closed)?;
        Ok((env.from, env.payload.decode()?))
    }

    /// Sends `message` to `to` and waits for the next message, decoded as an `R`.
    pub async fn request<M: Message, R: Message>(
        &mut self,
        to: &str,
        message: M,
    ) -> Result<R, Error> {
        self.send(to, message).await?;
        Ok(self.recv_message::<R>().await?.1)
    }

    /// Resolves `ident` through this endpoint's ART (asking the controller on a miss).
    pub async fn resolve(&mut self, ident: &str) -> Result<Id, Error> {
        if let Some(p) = self.art.get(ident) {
            return Ok(p.clone());
        }
        let id: Id = ident.into();
        let p = self
            .router
            .resolve_art(&self.id, &id)
            .await
            .ok_or_else(|| Error::UnknownIdentifier(ident.to_string()))?;
        self.art.insert(id, p.clone())?;
        Ok(p)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Ok(mut local) = self.router.local.write()
            && local
                .get(&self.id)
                .is_some_and(|s| s.generation == self.generation)
        {
            local.remove(&self.id);
        }
    }
}
