//! A micro-batcher: callers send one request each and wait for their answer; one task runs
//! whatever requests arrived while the previous batch was in flight as a single batch. Under
//! load this turns many small transactions into few large ones; when idle a request runs
//! alone, at once, with no timer to wait for.

use std::{future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot};

type Reply<Resp> = oneshot::Sender<Result<Resp, Arc<anyhow::Error>>>;

pub struct Batcher<Req, Resp> {
    tx: mpsc::Sender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// `run` gets a batch of at most `max_batch` requests and answers each, in order.
    pub fn spawn<F, Fut>(max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<Vec<Resp>>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<(Req, Reply<Resp>)>(max_batch * 4);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(max_batch);
            // Ends when every sender is gone.
            while rx.recv_many(&mut buf, max_batch).await > 0 {
                let (reqs, replies): (Vec<Req>, Vec<Reply<Resp>>) = buf.drain(..).unzip();
                match run(reqs).await {
                    Ok(resps) => {
                        debug_assert_eq!(resps.len(), replies.len());
                        for (reply, resp) in replies.into_iter().zip(resps) {
                            let _ = reply.send(Ok(resp));
                        }
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    pub async fn call(&self, req: Req) -> anyhow::Result<Resp> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((req, reply))
            .await
            .map_err(|_| anyhow::anyhow!("batcher stopped"))?;
        match answer.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(anyhow::anyhow!("{e:#}")),
            Err(_) => Err(anyhow::anyhow!("batcher stopped")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_calls_are_batched_and_answered_in_order() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let b = Batcher::spawn(64, move |reqs: Vec<u32>| {
            seen.lock().unwrap().push(reqs.len());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(reqs.into_iter().map(|r| r * 2).collect())
            }
        });
        let calls: Vec<_> = (0..200u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.call(i).await.unwrap()) })
            })
            .collect();
        for c in calls {
            let (i, doubled) = c.await.unwrap();
            assert_eq!(doubled, i * 2);
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(
            sizes.len() < 200,
            "expected batching, got {} batches",
            sizes.len()
        );
    }

    #[tokio::test]
    async fn an_error_reaches_every_caller_of_the_batch() {
        let b = Batcher::spawn(8, |_reqs: Vec<u32>| async {
            Err::<Vec<u32>, _>(anyhow::anyhow!("db down"))
        });
        let err = b.call(1).await.unwrap_err();
        assert!(err.to_string().contains("db down"));
    }
}
