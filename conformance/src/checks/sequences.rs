//! Triton's `sequence` extension: requests in sequences named by a
//! correlation ID, each sequence's state kept by the server, checked on
//! the suite's `sequence_sum` model (a running sum per sequence) where the
//! server advertises `sequence` and serves that model.

use serving_client::{Client, Error, Tensor};

use crate::check::{Check, OIP, Outcome, Suite, describe, variant};
use crate::models::SEQUENCE_MODEL;
use crate::target::Target;

pub(crate) fn checks() -> Vec<Check> {
    vec![Check {
        name: "extensions.sequence",
        families: OIP,
        summary: "where sequence is advertised and the suite's sequence_sum is served: 6 sequences from 6 clients at once, 5 requests each (sequence_id, sequence_start on the first, sequence_end on the last), each answered with its own running sum; a text correlation ID works alike; a request without a correlation ID, one continuing a sequence never started, and one after its sequence ended are refused as invalid",
        spec: "Triton sequence extension (sequence_id, sequence_start, sequence_end); model configuration sequence_batching",
        run: |s, t| Box::pin(sequence(s, t)),
    }]
}

/// Sends `value` in sequence `id` and returns the model's running sum.
async fn step(
    client: &Client,
    id: serving_client::SequenceId,
    value: f32,
    start: bool,
    end: bool,
) -> Result<f32, Error> {
    let r = client
        .infer(SEQUENCE_MODEL)
        .input(
            "INPUT",
            Tensor::from_vec(&[1, 1], vec![value]).expect("one value"),
        )
        .sequence(id, start, end)
        .send()
        .await?;
    let sum = r.output::<f32>("OUTPUT")?;
    sum.first()
        .copied()
        .ok_or_else(|| Error::Config("OUTPUT is empty".into()))
}

/// A refusal as the check wants it: invalid, or why not.
fn invalid(what: &str, result: Result<f32, Error>) -> Result<(), String> {
    match result {
        Err(Error::InvalidArgument { .. }) => Ok(()),
        Err(e) => Err(format!(
            "{what}: refused as {} ({}), not as invalid",
            variant(&e),
            describe(&e)
        )),
        Ok(sum) => Err(format!("{what}: answered {sum}, not refused")),
    }
}

async fn sequence(suite: &Suite, target: &Target) -> Outcome {
    let caps = suite.capabilities(target).await;
    if !caps.advertises("sequence") {
        return Outcome::NotApplicable(format!(
            "the server does not advertise sequence (extensions {:?})",
            caps.extensions
        ));
    }
    if !caps.serves(SEQUENCE_MODEL) {
        return Outcome::NotApplicable(format!(
            "the server does not serve the suite's {SEQUENCE_MODEL} (`conformance models` writes it for the reference and Triton layouts)"
        ));
    }
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(o) => return Outcome::Fail(o),
    };
    // Correlation IDs unlikely to collide with another client's.
    let base = 7_000_000 + u64::from(std::process::id() % 100_000) * 10;
    let tasks: Vec<_> = (0..6u64)
        .map(|k| {
            let client = client.clone();
            tokio::spawn(async move {
                let id = base + k;
                let mut sum = 0.0f32;
                for n in 1..=5u64 {
                    let value = (id % 1000 * 10 + n) as f32;
                    sum += value;
                    let got = step(&client, id.into(), value, n == 1, n == 5)
                        .await
                        .map_err(|e| format!("sequence {id} request {n}: {}", describe(&e)))?;
                    if got != sum {
                        return Err(format!(
                            "sequence {id} request {n}: answered {got}, its running sum is {sum}"
                        ));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Outcome::Fail(why),
            Err(e) => return Outcome::Fail(format!("a sequence's task failed: {e}")),
        }
    }
    let text = format!("conformance-{base}");
    let mut sum = 0.0;
    for (n, v) in [2.0f32, 3.0, 4.0].into_iter().enumerate() {
        sum += v;
        match step(&client, text.clone().into(), v, n == 0, n == 2).await {
            Ok(got) if got == sum => {}
            Ok(got) => {
                return Outcome::Fail(format!(
                    "text sequence {text:?} request {}: answered {got}, its running sum is {sum}",
                    n + 1
                ));
            }
            Err(e) => return Outcome::Fail(format!("text sequence {text:?}: {}", describe(&e))),
        }
    }
    let no_id = client
        .infer(SEQUENCE_MODEL)
        .input("INPUT", Tensor::from_vec(&[1, 1], vec![1f32]).expect("1"))
        .send()
        .await
        .and_then(|r| Ok(r.output::<f32>("OUTPUT")?[0]));
    let refusals = [
        invalid("no correlation ID", no_id),
        invalid(
            "a sequence never started",
            step(&client, (base + 9).into(), 1.0, false, false).await,
        ),
        invalid(
            "after the sequence's end",
            step(&client, base.into(), 1.0, false, false).await,
        ),
    ];
    if let Some(why) = refusals.into_iter().find_map(Result::err) {
        return Outcome::Fail(why);
    }
    Outcome::Pass(
        "6 interleaved sequences of 5 requests and a text-ID sequence each kept their own running sum; no ID, not started and ended were refused as invalid".into(),
    )
}
