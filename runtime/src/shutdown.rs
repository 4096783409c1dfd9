//! Shutting a box down, the tokio-rs/mini-redis way.
//!
//! The box owns a `broadcast::Sender<()>`; every task it spawns holds a [`Shutdown`] (a
//! receiver) and a clone of an `mpsc::Sender<()>` that it never sends on. To stop, the box
//! broadcasts, every task notices in its `select!` and returns, dropping its `mpsc` sender;
//! when the last one is dropped the box's `mpsc::Receiver` yields `None` and the box knows that
//! everything has stopped.

use tokio::sync::{broadcast, mpsc};

/// Listens for the box's shutdown signal.
#[derive(Debug)]
pub(crate) struct Shutdown {
    /// `true` once the signal has been received.
    is_shutdown: bool,
    /// The receiving half of the box's shutdown broadcast.
    notify: broadcast::Receiver<()>,
    /// Held, never used: dropping it tells the box this task has finished.
    _done: mpsc::Sender<()>,
}

impl Shutdown {
    /// A listener from the box's broadcast receiver and completion sender.
    pub(crate) fn new(notify: broadcast::Receiver<()>, done: mpsc::Sender<()>) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            notify,
            _done: done,
        }
    }

    /// Waits for the signal (returns at once if it was already received).
    pub(crate) async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // Either a value or "lagged"/"closed": all mean stop.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}

/// The box's side of shutdown: the broadcast sender and the completion sender that every
/// task's [`Shutdown`] clones.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    /// Sends the shutdown signal; every task subscribes.
    notify: broadcast::Sender<()>,
    /// Cloned into each task; `None` once shutdown has begun, so no new task starts and the
    /// box's receiver sees the channel close when the last task ends.
    done: std::sync::Mutex<Option<mpsc::Sender<()>>>,
}

impl Lifecycle {
    /// A lifecycle and the receiver that closes when every task has ended.
    pub(crate) fn new() -> (Lifecycle, mpsc::Receiver<()>) {
        let (notify, _) = broadcast::channel(1);
        let (done, done_rx) = mpsc::channel(1);
        (
            Lifecycle {
                notify,
                done: std::sync::Mutex::new(Some(done)),
            },
            done_rx,
        )
    }

    /// A listener for a new task, or `None` if the box is shutting down.
    pub(crate) fn listener(&self) -> Option<Shutdown> {
        let done = self.done.lock().expect("lifecycle poisoned").clone()?;
        Some(Shutdown::new(self.notify.subscribe(), done))
    }

    /// Signals every task to stop and lets go of the box's own completion sender.
    pub(crate) fn begin(&self) {
        self.done.lock().expect("lifecycle poisoned").take();
        let _ = self.notify.send(());
    }
}
