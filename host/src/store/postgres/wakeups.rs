//! Wake-ups: a host learns that another host accepted a message without
//! asking the database over and over, so an idle deployment costs the
//! database next to nothing.
//!
//! Accepting a message notifies the channel `flowhost_inbox` in its
//! transaction (delivered only if it commits). Each host listens on a
//! connection of its own, outside the pool. Notifications are a hint, not a
//! record: none arrive while the connection is down, so every (re)connect
//! wakes the host once, to look for what it missed, and the host still
//! looks on a slow timer of its own in case one is lost. What to run is
//! always read from the tables.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PostgresStore;

/// The channel accepts notify.
pub(super) const CHANNEL: &str = "flowhost_inbox";

/// The longest wait between two attempts to connect again.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// Wakes its holder when any host accepts a message, and after every
/// (re)connect. Wakes that come while nobody waits are kept (as one), so
/// none is lost between two waits. Stops listening when dropped.
pub struct Wakeups {
    notify: Arc<Notify>,
    listener: JoinHandle<()>,
}

impl Wakeups {
    /// Returns at the next wake, or at once if one came since the last wait.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Starts listening for accepted messages, on a connection of its own
    /// that is made again whenever it is lost.
    pub fn wakeups(&self) -> Wakeups {
        let notify = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(
            self.config.clone(),
            self.tls.clone(),
            Arc::clone(&notify),
        ));
        Wakeups { notify, listener }
    }
}

async fn listen(config: tokio_postgres::Config, tls: MakeRustlsConnect, notify: Arc<Notify>) {
    let mut wait = Duration::from_millis(100);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let woken = Arc::clone(&notify);
                // Drives the connection, and wakes at each notification,
                // until the connection ends.
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => woken.notify_one(),
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "the PostgreSQL listener's connection failed");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        wait = Duration::from_millis(100);
                        // What was accepted while nobody listened: look.
                        notify.notify_one();
                        let _ = driver.await;
                        tracing::warn!(
                            "the PostgreSQL listener lost its connection; connecting again"
                        );
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot LISTEN on PostgreSQL");
                        driver.abort();
                    }
                }
                drop(client);
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "the PostgreSQL listener cannot connect");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RECONNECT_WAIT);
    }
}
