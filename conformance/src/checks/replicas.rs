//! Many clients at once, a replica that fails, a server process killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(feature = "reference")]
use std::time::Duration;

use serving_client::Client;
use serving_proto::DataType;

use super::values::{Carrier, compare, identity_inputs, runner};
use crate::call::{self, Failed};
use crate::check::{BOTH, Check, Outcome, Suite, describe};
use crate::discovery::IdentityModel;
#[cfg(feature = "reference")]
use crate::target::Transport;
use crate::target::{Family, Target};

pub(crate) fn checks() -> Vec<Check> {
    vec![
        Check {
            name: "replicas.concurrent",
            families: BOTH,
            summary: "16 clients at once, 12 requests each, random FP32 tensors through identity_fp32: every answer is the client's own (no cross-talk), shapes and values exact",
            spec: "mindspore-serving.md §5 (batching across requests must scatter results back); open-inference-protocol.md §1.1",
            run: |s, t| Box::pin(concurrent(s, t)),
        },
        Check {
            name: "replicas.replica_failure",
            families: BOTH,
            summary: "identity_fp32 on two replicas; while 16 clients send, each replica in turn is made to fail: no request is lost or wrong",
            spec: "mindspore-serving.md §5 (a failed worker's work is re-dispatched); issue: faults lose no request",
            run: |s, t| Box::pin(replica_failure(s, t)),
        },
        Check {
            name: "replicas.process_killed",
            families: BOTH,
            summary: "two server processes behind one client with several endpoints; one is killed (SIGKILL) mid-run: every call succeeds",
            spec: "serving-client several endpoints: retryable failures are retried elsewhere",
            run: |s, t| Box::pin(process_killed(s, t)),
        },
    ]
}

async fn one_client(
    client: Client,
    family: Family,
    identity: Arc<IdentityModel>,
    carrier: Carrier,
    requests: usize,
    done: Arc<AtomicUsize>,
) -> Result<(), String> {
    let mut runner = runner();
    let model = &identity.name;
    for i in 0..requests {
        let inputs = identity_inputs(&identity, &mut runner, carrier);
        let outputs = match call::run(&client, family, model, "predict", &inputs, None).await {
            Ok(outputs) => outputs,
            Err(Failed::Call(e)) => {
                return Err(match family {
                    Family::MindSpore => format!("request {i}: {}", describe(&e)),
                    Family::OpenInference => {
                        format!("request {i} ({:?}): {}", inputs[0].1, describe(&e))
                    }
                });
            }
            Err(Failed::NoResult) => return Err("no result".into()),
            Err(Failed::Instance(e)) => return Err(format!("request {i}: {}", e.message)),
        };
        for ((name, x), pair) in inputs.iter().zip(&identity.pairs) {
            let y = call::output(outputs.clone(), &pair.output)
                .ok_or_else(|| format!("request {i}: no {}", pair.output))?;
            compare(x, &y, carrier).map_err(|e| format!("request {i}, {name}: {e}"))?;
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

async fn concurrent(suite: &Suite, target: &Target) -> Outcome {
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let identity = match suite.identity(target, DataType::Fp32).await {
        Ok(m) => Arc::new(m),
        Err(why) => return Outcome::NotApplicable(why),
    };
    let done = Arc::new(AtomicUsize::new(0));
    let (clients, requests) = (16, 12);
    match run_clients(client, target, identity, clients, requests, done.clone()).await {
        Ok(()) => Outcome::Pass(format!(
            "{} requests from {clients} clients, each answered with its own tensor",
            done.load(Ordering::SeqCst)
        )),
        Err(e) => Outcome::Fail(e),
    }
}

async fn run_clients(
    client: Client,
    target: &Target,
    identity: Arc<IdentityModel>,
    clients: usize,
    requests: usize,
    done: Arc<AtomicUsize>,
) -> Result<(), String> {
    let carrier = Carrier::of(target);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(one_client(
                client.clone(),
                target.family,
                identity.clone(),
                carrier,
                requests,
                done.clone(),
            ))
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| format!("a client task failed: {e}"))??;
    }
    Ok(())
}

#[cfg(not(feature = "reference"))]
async fn replica_failure(_: &Suite, _: &Target) -> Outcome {
    Outcome::NotApplicable(
        "needs servers the suite starts, and this build has none (built without the `reference` feature)".into(),
    )
}

#[cfg(feature = "reference")]
async fn replica_failure(suite: &Suite, target: &Target) -> Outcome {
    let Some(control) = &suite.control else {
        return Outcome::NotApplicable(
            "needs a server the suite controls (it makes a replica fail)".into(),
        );
    };
    let Ok(servable) = control.running.state.registry.get("identity_fp32", 0) else {
        return Outcome::Fail("identity_fp32 is not loaded".into());
    };
    let faults = servable.scheduler().faults();
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let identity = match suite.identity(target, DataType::Fp32).await {
        Ok(m) => Arc::new(m),
        Err(e) => return Outcome::Fail(e),
    };
    let done = Arc::new(AtomicUsize::new(0));
    // The killer waits for the load to reach each point; if the load ends
    // first (a client failed), it stops too instead of waiting forever.
    let finished = std::sync::atomic::AtomicBool::new(false);
    let load = async {
        let result = run_clients(client, target, identity.clone(), 16, 20, done.clone()).await;
        finished.store(true, Ordering::SeqCst);
        result
    };
    let killer = async {
        let mut killed = 0;
        for replica in 0..2 {
            while done.load(Ordering::SeqCst) < 40 + 100 * replica {
                if finished.load(Ordering::SeqCst) {
                    return killed;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if faults.kill(replica) {
                killed += 1;
            }
            // Wait for it to fail (on its next run), then to come back,
            // before the next one fails: one replica is down at a time.
            for want_down in [true, false] {
                for _ in 0..4000 {
                    if (servable.scheduler().alive() < 2) == want_down {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
        killed
    };
    let (result, killed) = tokio::join!(load, killer);
    match result {
        Ok(()) if killed == 2 => Outcome::Pass(format!(
            "{} requests while both replicas failed in turn, none lost",
            done.load(Ordering::SeqCst)
        )),
        Ok(()) => Outcome::Fail(format!("only {killed} of 2 replicas could be made to fail")),
        Err(e) => Outcome::Fail(e),
    }
}

#[cfg(not(feature = "reference"))]
async fn process_killed(_: &Suite, _: &Target) -> Outcome {
    Outcome::NotApplicable(
        "needs servers the suite starts, and this build has none (built without the `reference` feature)".into(),
    )
}

#[cfg(feature = "reference")]
async fn process_killed(suite: &Suite, target: &Target) -> Outcome {
    let Some(exe) = suite.server_exe() else {
        return Outcome::NotApplicable("needs server processes the suite starts and kills".into());
    };
    let (mut a, a_grpc, a_http) = match crate::control::spawn(exe).await {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(e),
    };
    let (mut b, b_grpc, b_http) = match crate::control::spawn(exe).await {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(e),
    };
    let (ea, eb) = match target.transport {
        Transport::Grpc => (a_grpc, b_grpc),
        Transport::Http => (a_http, b_http),
    };
    let client = match Client::builder()
        .endpoints([ea, eb])
        .protocol(target.family.protocol())
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(30))
        .set_aside_for(Duration::from_secs(2))
        .retries(4)
        .build()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let identity = match suite.identity(target, DataType::Fp32).await {
        Ok(m) => Arc::new(m),
        Err(e) => return Outcome::Fail(e),
    };
    let done = Arc::new(AtomicUsize::new(0));
    let finished = std::sync::atomic::AtomicBool::new(false);
    let load = async {
        let result = run_clients(client, target, identity.clone(), 8, 30, done.clone()).await;
        finished.store(true, Ordering::SeqCst);
        result
    };
    let killer = async {
        // Not past the load's end: a load that failed early must not
        // leave the killer waiting forever.
        while done.load(Ordering::SeqCst) < 60 && !finished.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = a.start_kill();
        let _ = a.wait().await;
        done.load(Ordering::SeqCst)
    };
    let (result, at_kill) = tokio::join!(load, killer);
    let _ = b.start_kill();
    let _ = b.wait().await;
    match result {
        Ok(()) => Outcome::Pass(format!(
            "{} calls, one of two processes killed after {at_kill}, none failed",
            done.load(Ordering::SeqCst)
        )),
        Err(e) => Outcome::Fail(e),
    }
}
