//! Reading what the in-process proxy logs. All tests share one binary, so there is one
//! process-wide subscriber: it hands each event to the capture of the thread that emits
//! it, and a test reads only its own lines. A capturing test runs on the default
//! `#[tokio::test]` runtime (one thread), where its proxy and stand-in run too.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, Once};

use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

thread_local! {
    /// Where this thread's events go, while a test captures them.
    static CURRENT: RefCell<Option<CapturedLogs>> = const { RefCell::new(None) };
}

/// The lines one test's proxy logged, as JSON (DEBUG and up).
#[derive(Clone, Default)]
pub(crate) struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Captures this thread's log events until dropped.
pub(crate) struct Capture {
    /// What was logged since the capture began.
    pub(crate) logs: CapturedLogs,
    previous: Option<CapturedLogs>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        CURRENT.with(|current| *current.borrow_mut() = self.previous.take());
    }
}

/// Starts capturing what this thread logs (installing the process-wide subscriber once).
pub(crate) fn capture() -> Capture {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Process-wide, not `set_default`: a thread-local subscriber misses events whose
        // callsites other test threads registered first. The filter is dynamic (asked
        // per event, never cached per callsite: a plain `filter_fn` caches the answer of
        // whichever thread hits a callsite first), so threads that capture nothing format
        // nothing and a capturing thread sees every callsite.
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(|| ThreadWriter)
            .with_filter(dynamic_filter_fn(|metadata, _| {
                *metadata.level() <= tracing::Level::DEBUG
                    && CURRENT.with(|current| current.borrow().is_some())
            }));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .unwrap();
    });
    let logs = CapturedLogs::default();
    let previous = CURRENT.with(|current| current.borrow_mut().replace(logs.clone()));
    Capture { logs, previous }
}

/// Writes to the capture of the thread it is used on, if any.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CURRENT.with(|current| {
            if let Some(logs) = current.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
