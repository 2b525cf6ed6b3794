//! Model kinds beyond single models, each checked where the server serves
//! the suite's model of that kind: an ensemble (`ensemble_add`) and a
//! model with the response cache on (`add_cached`).

use serving_client::{Client, Error, InferResponse, ModelStatistics, Tensor};

use crate::check::{Check, OIP, Outcome, Suite, describe, variant};
use crate::models::{CACHED_MODEL, ENSEMBLE_MODEL};
use crate::target::Target;

pub(crate) fn checks() -> Vec<Check> {
    vec![
        Check {
            name: "models.ensemble",
            families: OIP,
            summary: "where the suite's ensemble_add is served (add_batch twice): metadata platform \"ensemble\"; A and B of 3 rows give OUT = 2 (A + B); an INT32 A is refused as invalid",
            spec: "Triton ensembles (platform \"ensemble\", ensemble_scheduling)",
            run: |s, t| Box::pin(ensemble(s, t)),
        },
        Check {
            name: "models.response_cache",
            families: OIP,
            summary: "where the suite's add_cached (response_cache { enable: true }) is served: the same request twice answers the same; where statistics are advertised and the server keeps a cache, the second is a cache hit (cache_hit +1) and the first a miss; n/a when the server keeps no cache",
            spec: "Triton response cache (response_cache, --cache-config; statistics cache_hit, cache_miss)",
            run: |s, t| Box::pin(response_cache(s, t)),
        },
    ]
}

/// A client, when the target serves `model`; the check's outcome if not.
async fn serving(suite: &Suite, target: &Target, model: &str) -> Result<Client, Outcome> {
    let caps = suite.capabilities(target).await;
    if !caps.serves(model) {
        return Err(Outcome::NotApplicable(format!(
            "the server does not serve the suite's {model} (`conformance models` writes it for the reference and Triton layouts)"
        )));
    }
    suite.client(target).map_err(Outcome::Fail)
}

fn rows(values: &[f32]) -> Tensor {
    Tensor::from_vec(&[values.len() as i64 / 2, 2], values.to_vec()).expect("pairs")
}

async fn ensemble(suite: &Suite, target: &Target) -> Outcome {
    let client = match serving(suite, target, ENSEMBLE_MODEL).await {
        Ok(c) => c,
        Err(o) => return o,
    };
    match client.model_metadata(ENSEMBLE_MODEL, None).await {
        Ok(m) if m.platform == "ensemble" => {}
        Ok(m) => {
            return Outcome::Fail(format!(
                "metadata of {ENSEMBLE_MODEL} says platform {:?}, not \"ensemble\"",
                m.platform
            ));
        }
        Err(e) => return Outcome::Fail(format!("metadata: {}", describe(&e))),
    }
    let a = [1.0f32, 2.0, 3.0, 4.0, -5.0, 0.5];
    let b = [0.5f32, -1.0, 10.0, 0.0, 5.0, 0.25];
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| 2.0 * (x + y)).collect();
    let got = client
        .infer(ENSEMBLE_MODEL)
        .input("A", rows(&a))
        .input("B", rows(&b))
        .send()
        .await
        .and_then(|r| Ok(r.output::<f32>("OUT")?));
    match got {
        Ok(v) if v == want => {}
        Ok(v) => return Outcome::Fail(format!("OUT is {v:?}, 2 (A + B) is {want:?}")),
        Err(e) => return Outcome::Fail(describe(&e)),
    }
    let bad = client
        .infer(ENSEMBLE_MODEL)
        .input("A", Tensor::from_vec(&[1, 2], vec![1i32, 2]).expect("2"))
        .input("B", rows(&[1.0, 2.0]))
        .send()
        .await;
    match bad {
        Err(Error::InvalidArgument { .. }) => {}
        Err(e) => {
            return Outcome::Fail(format!(
                "an INT32 A was refused as {} ({}), not as invalid",
                variant(&e),
                describe(&e)
            ));
        }
        Ok(_) => return Outcome::Fail("an INT32 A was answered, not refused".into()),
    }
    Outcome::Pass(
        "platform \"ensemble\"; OUT = 2 (A + B) over 3 rows; a wrong datatype refused as invalid"
            .into(),
    )
}

/// The cache's hit and miss counts of `stats`.
fn cache_counts(stats: &[ModelStatistics]) -> (u64, u64) {
    stats.iter().fold((0, 0), |(hit, miss), s| {
        let i = s.inference_stats.as_ref();
        (
            hit + i.and_then(|i| i.cache_hit).map_or(0, |d| d.count),
            miss + i.and_then(|i| i.cache_miss).map_or(0, |d| d.count),
        )
    })
}

async fn response_cache(suite: &Suite, target: &Target) -> Outcome {
    let client = match serving(suite, target, CACHED_MODEL).await {
        Ok(c) => c,
        Err(o) => return o,
    };
    // Values no other run sends (each target of one server too): a miss
    // first, then a hit.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = (std::process::id() % 10_000 + 10_000 * (run % 1_000)) as f32 + 0.5;
    let x = rows(&[seed, 1.0, 2.0, seed]);
    let ask = || async {
        client
            .infer(CACHED_MODEL)
            .input("x1", x.clone())
            .input("x2", x.clone())
            .send()
            .await
    };
    let stats = suite.capabilities(target).await.advertises("statistics");
    let read = || client.model_statistics(Some(CACHED_MODEL), None);
    let before = if stats {
        match read().await {
            Ok(s) => Some(cache_counts(&s)),
            Err(e) => return Outcome::Fail(format!("statistics: {}", describe(&e))),
        }
    } else {
        None
    };
    let answers: Vec<Result<InferResponse, Error>> = vec![ask().await, ask().await];
    let outputs: Vec<Vec<f32>> = match answers
        .into_iter()
        .map(|r| r.and_then(|r| Ok(r.output::<f32>("y")?)))
        .collect::<Result<_, _>>()
    {
        Ok(o) => o,
        Err(e) => return Outcome::Fail(describe(&e)),
    };
    let want = vec![2.0 * seed, 2.0, 4.0, 2.0 * seed];
    if outputs[0] != want || outputs[1] != want {
        return Outcome::Fail(format!(
            "the two answers are {:?} and {:?}; x1 + x2 is {want:?}",
            outputs[0], outputs[1]
        ));
    }
    let Some(before) = before else {
        return Outcome::NotApplicable(
            "the same request answered the same twice; without statistics, the cache cannot be seen".into(),
        );
    };
    // Statistics may be updated just after the answer is sent.
    let mut after = before;
    for _ in 0..40 {
        after = match read().await {
            Ok(s) => cache_counts(&s),
            Err(e) => return Outcome::Fail(format!("statistics: {}", describe(&e))),
        };
        if after.0 > before.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    match (after.0 - before.0, after.1 - before.1) {
        (1, 1) => Outcome::Pass(
            "the same request twice: the first a cache miss, the second a hit, both answered x1 + x2".into(),
        ),
        (0, 0) => Outcome::NotApplicable(
            "the server keeps no response cache (cache_hit and cache_miss stay 0; Triton: --cache-config local,size=BYTES)".into(),
        ),
        (hit, miss) => Outcome::Fail(format!(
            "the same request twice raised cache_hit by {hit} and cache_miss by {miss}, not 1 and 1"
        )),
    }
}
