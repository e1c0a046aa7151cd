//! Wake-ups: a host learns that a session has work (a message accepted by
//! any host, an output queued again by the admin API) without asking the
//! database over and over, so an idle deployment costs the database next
//! to nothing.
//!
//! The statement that makes the work notifies the channel `flowhost_inbox`
//! in its transaction (delivered only if it commits), naming the session
//! and what came: `m` a message, `o` an output, then the endpoint, a line
//! break, and the session id. Each host listens on a connection of its own,
//! outside the pool. Notifications are a hint, not a record: none arrive
//! while the connection is down, so every (re)connect wakes the host with
//! [`Wake::Reconnected`], to look for what it missed, and the host still
//! looks on a slow timer of its own in case one is lost. What to run is
//! always read from the tables.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PostgresStore;
use crate::store::SessionKey;

/// The channel work is announced on.
const CHANNEL: &str = "flowhost_inbox";

/// The SQL expression that announces work for a session (`endpoint` and
/// `session_id` are SQL expressions): `'m'` for a message, `'o'` for an
/// output.
pub(super) fn notify(kind: char, endpoint: &str, session_id: &str) -> String {
    format!("pg_notify('{CHANNEL}', '{kind}' || {endpoint} || E'\\n' || {session_id})")
}

/// Why a host was woken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// A message was accepted for the session.
    Message(SessionKey),
    /// An output of the session was queued again for delivery.
    Output(SessionKey),
    /// Listening began, or began again after the connection was lost:
    /// whatever was announced meanwhile was missed.
    Reconnected,
}

impl Wake {
    fn parse(payload: &str) -> Option<Wake> {
        let kind = payload.chars().next()?;
        let (endpoint, session_id) = payload.get(1..)?.split_once('\n')?;
        let session = SessionKey {
            endpoint: endpoint.to_owned(),
            session_id: session_id.to_owned(),
        };
        match kind {
            'm' => Some(Wake::Message(session)),
            'o' => Some(Wake::Output(session)),
            _ => None,
        }
    }
}

/// The longest wait between two attempts to connect again.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// The wakes of this host, in the order they came: one for every piece of
/// work announced by any host, and one after every (re)connect. Wakes that
/// come while nobody waits are kept. Stops listening when dropped.
pub struct Wakeups {
    wakes: mpsc::UnboundedReceiver<Wake>,
    listener: JoinHandle<()>,
}

impl Wakeups {
    /// The next wake.
    pub async fn next(&mut self) -> Wake {
        self.wakes
            .recv()
            .await
            .expect("the listener runs until the wakeups are dropped")
    }

    /// The next wake if one has come, without waiting.
    pub fn try_next(&mut self) -> Option<Wake> {
        self.wakes.try_recv().ok()
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Starts listening for work announced by any host, on a connection of
    /// its own that is made again whenever it is lost.
    pub fn wakeups(&self) -> Wakeups {
        let (wake, wakes) = mpsc::unbounded_channel();
        let listener = tokio::spawn(listen(self.config.clone(), self.tls.clone(), wake));
        Wakeups { wakes, listener }
    }
}

async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    wake: mpsc::UnboundedSender<Wake>,
) {
    let mut wait = Duration::from_millis(100);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let woken = wake.clone();
                // Drives the connection, and wakes at each notification,
                // until the connection ends.
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(note)) => {
                                match Wake::parse(note.payload()) {
                                    Some(parsed) => {
                                        let _ = woken.send(parsed);
                                    }
                                    None => tracing::warn!(
                                        payload = note.payload(),
                                        "a notification flowhost does not know; ignored"
                                    ),
                                }
                            }
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
                        // What was announced while nobody listened: look.
                        if wake.send(Wake::Reconnected).is_err() {
                            return; // Nobody listens any more.
                        }
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
