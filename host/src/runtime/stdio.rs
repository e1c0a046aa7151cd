//! The guest's stdout and stderr: captured in memory, within the message's
//! log budget, then written to the host's log and attached to trap reports.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::limits::LimitExceeded;

/// The bytes a message may still log, shared by stdout, stderr and the `log`
/// import.
#[derive(Clone)]
pub(crate) struct LogBudget {
    limit: u64,
    used: Arc<Mutex<u64>>,
}

impl LogBudget {
    pub(crate) fn new(limit: u64) -> Self {
        LogBudget {
            limit,
            used: Arc::new(Mutex::new(0)),
        }
    }

    /// The bytes left in the budget.
    pub(crate) fn left(&self) -> u64 {
        self.limit.saturating_sub(*self.used.lock().unwrap())
    }

    /// Takes `bytes` from the budget, or says which limit it would break.
    pub(crate) fn take(&self, bytes: usize) -> Result<(), LimitExceeded> {
        let mut used = self.used.lock().unwrap();
        let after = *used + bytes as u64;
        if after > self.limit {
            return Err(LimitExceeded::Log(self.limit));
        }
        *used = after;
        Ok(())
    }
}

/// One captured output stream (stdout or stderr) of a guest.
#[derive(Clone)]
pub(crate) struct Capture {
    buffer: Arc<Mutex<Vec<u8>>>,
    budget: LogBudget,
}

impl Capture {
    pub(crate) fn new(budget: LogBudget) -> Self {
        Capture {
            buffer: Arc::default(),
            budget,
        }
    }

    /// What the guest wrote, with invalid UTF-8 replaced.
    pub(crate) fn contents(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }

    fn append(&self, bytes: &[u8]) -> Result<(), LimitExceeded> {
        self.budget.take(bytes.len())?;
        self.buffer.lock().unwrap().extend_from_slice(bytes);
        Ok(())
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes)
            .map_err(|limit| StreamError::Trap(limit.into()))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Writes are checked against the budget as they happen; advertising a
        // generous window keeps guests from writing byte by byte.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.append(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
