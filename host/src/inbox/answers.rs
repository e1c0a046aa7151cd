//! Requests waiting on their message's turn, for REST endpoints: the turn
//! runner says when a message has ended, and the request reads the answer
//! from the store.
//!
//! Only a wake-up travels here; the answer is in the store. So a request
//! that starts waiting after its turn ended finds it there, and a request
//! whose message another host ran (hosts sharing a store) finds it by
//! looking again, at an interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::Inbox;
use crate::store::{StoreError, TurnAnswer};

/// The messages requests are waiting on, by id.
#[derive(Default)]
pub struct Answers {
    waiting: Mutex<HashMap<i64, (watch::Sender<bool>, usize)>>,
}

impl Answers {
    /// Says that message `id`'s turn has ended (done or failed).
    pub(crate) fn ended(&self, id: i64) {
        if let Some((ended, _)) = self.waiting.lock().unwrap().get(&id) {
            ended.send_replace(true);
        }
    }

    fn watch(self: &Arc<Self>, id: i64) -> Watch {
        let mut waiting = self.waiting.lock().unwrap();
        let (ended, watchers) = waiting
            .entry(id)
            .or_insert_with(|| (watch::Sender::new(false), 0));
        *watchers += 1;
        Watch {
            ended: ended.subscribe(),
            answers: Arc::clone(self),
            id,
        }
    }
}

/// One request's interest in a message; forgotten when dropped.
struct Watch {
    ended: watch::Receiver<bool>,
    answers: Arc<Answers>,
    id: i64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiting = self.answers.waiting.lock().unwrap();
        if let Some((_, watchers)) = waiting.get_mut(&self.id) {
            *watchers -= 1;
            if *watchers == 0 {
                waiting.remove(&self.id);
            }
        }
    }
}

/// How often a request looks in the store for an answer that another host
/// may have committed (or, on one host, in case a wake-up was missed).
const LOOK_AGAIN_SHARED: Duration = Duration::from_millis(100);
const LOOK_AGAIN_HERE: Duration = Duration::from_secs(1);

impl Inbox {
    /// Waits until message `id`'s turn has ended, for at most `timeout`;
    /// returns its answer (`Pending` if the time ran out).
    pub async fn answer(&self, id: i64, timeout: Duration) -> Result<TurnAnswer, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut watch = self.answers.watch(id);
        let look_again = if self.is_shared() {
            LOOK_AGAIN_SHARED
        } else {
            LOOK_AGAIN_HERE
        };
        loop {
            let answer = self.store.turn_answer(id).await?;
            if answer != TurnAnswer::Pending || tokio::time::Instant::now() >= deadline {
                return Ok(answer);
            }
            let next_look = (tokio::time::Instant::now() + look_again).min(deadline);
            // The guard `wait_for` returns is dropped at once: it may not be
            // held across an await.
            let ended = async {
                let _ = watch.ended.wait_for(|ended| *ended).await;
            };
            tokio::select! {
                () = ended => {}
                () = tokio::time::sleep_until(next_look) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_watched_twice_is_forgotten_when_both_stop() {
        let answers = Arc::new(Answers::default());
        let one = answers.watch(7);
        let mut two = answers.watch(7);
        answers.ended(7);
        two.ended.wait_for(|ended| *ended).await.unwrap();
        drop(one);
        assert_eq!(answers.waiting.lock().unwrap().len(), 1);
        drop(two);
        assert!(answers.waiting.lock().unwrap().is_empty());
        answers.ended(7); // Nobody waits: nothing happens.
    }
}
