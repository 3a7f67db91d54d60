//! Noticing a task of the proxy that ends while it should be serving.
//!
//! A listener or the report sender that stops (a bug, a panic) would otherwise go unnoticed
//! until SIGTERM: `/ready` would stay 200 and connections would be refused or reports lost
//! silently. Each such task carries an [`EndNotice`] that names it on a channel when the task
//! ends, by return or by panic (its `Drop` runs during unwinding too).

use std::future::Future;

use tokio::sync::mpsc;

/// Names a task on the channel when it is dropped.
pub(crate) struct EndNotice {
    name: String,
    tx: mpsc::UnboundedSender<String>,
}

impl Drop for EndNotice {
    fn drop(&mut self) {
        // During shutdown nobody listens any more; the notice is simply not read.
        let _ = self.tx.send(std::mem::take(&mut self.name));
    }
}

/// `task`, which sends `name` on `tx` when it ends in any way.
pub(crate) fn noticed<F: Future>(
    name: String,
    tx: &mpsc::UnboundedSender<String>,
    task: F,
) -> impl Future<Output = F::Output> {
    let notice = EndNotice {
        name,
        tx: tx.clone(),
    };
    async move {
        let _notice = notice;
        task.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_returns_or_panics_is_named() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let returned = tokio::spawn(noticed("sender".into(), &tx, async {}));
        returned.await.unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some("sender"));

        let panicked = tokio::spawn(noticed("listener 127.0.0.1:1".into(), &tx, async {
            panic!("listener broke")
        }));
        assert!(panicked.await.unwrap_err().is_panic());
        assert_eq!(rx.recv().await.as_deref(), Some("listener 127.0.0.1:1"));

        let serving = tokio::spawn(noticed("admin".into(), &tx, std::future::pending::<()>()));
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "a task still serving sends nothing");
        serving.abort();
    }
}
