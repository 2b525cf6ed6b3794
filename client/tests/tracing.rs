//! The client in a trace: with the `opentelemetry` feature, each call
//! carries a W3C `traceparent` naming the application's current span, so
//! the reference server's spans (exported to an in-process OTLP collector)
//! join the application's trace; and the trace settings calls on both
//! transports.
#![cfg(feature = "opentelemetry")]

use std::time::Duration;

use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceState};
use opentelemetry::{Context, SpanId, TraceId};
use reference_server::server::{self, Config};
use reference_server::trace::{Level, Mode, TraceConfig, TraceSettings};
use serving_client::{Client, Tensor};

type Spans = reference_server::trace::Received;

async fn collector() -> (String, Spans) {
    reference_server::trace::collector()
        .await
        .expect("a collector on a free port")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_join_the_applications_trace() {
    let (url, spans) = collector().await;
    let s = server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        trace: TraceConfig {
            settings: TraceSettings {
                level: Level::Timestamps,
                rate: 1,
                mode: Mode::OpenTelemetry,
                ..TraceSettings::default()
            },
            url: Some(url),
        },
        ..Config::default()
    })
    .await
    .unwrap();
    let x = Tensor::from_vec(&[2, 2], vec![1f32, 2.0, 3.0, 4.0]).unwrap();
    for (k, url) in [
        format!("grpc://{}", s.grpc_address),
        format!("http://{}", s.rest_address),
    ]
    .into_iter()
    .enumerate()
    {
        let client = Client::builder().endpoint(&url).build().unwrap();
        // The application's span (as an OpenTelemetry SDK would make it).
        let trace_id = TraceId::from_hex(&format!("{:032x}", 0xabc0 + k)).unwrap();
        let span_id = SpanId::from_hex(&format!("{:016x}", 0x77 + k)).unwrap();
        let app = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(app);
        {
            let _attached = cx.attach();
            client
                .infer("add")
                .input("x1", x.clone())
                .input("x2", x.clone())
                .send()
                .await
                .unwrap();
        }
        let mut found = None;
        for _ in 0..100 {
            found = spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.parent_span_id == span_id.to_bytes())
                .cloned();
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let root = found.unwrap_or_else(|| panic!("{url}: no span under the application's"));
        assert_eq!(hex(&root.trace_id), trace_id.to_string(), "{url}");
    }

    // The trace settings, on both transports.
    for url in [
        format!("grpc://{}", s.grpc_address),
        format!("http://{}", s.rest_address),
    ] {
        let client = Client::builder().endpoint(&url).build().unwrap();
        let all = client.trace_settings(None).await.unwrap();
        assert_eq!(all["trace_level"], ["TIMESTAMPS"], "{url}");
        let changes = [("trace_rate".to_owned(), Some(vec!["50".to_owned()]))].into();
        let model = client
            .update_trace_settings(Some("add"), &changes)
            .await
            .unwrap();
        assert_eq!(model["trace_rate"], ["50"], "{url}");
        assert_eq!(
            client.trace_settings(None).await.unwrap()["trace_rate"],
            ["1"]
        );
        let back = [("trace_rate".to_owned(), None)].into();
        let model = client
            .update_trace_settings(Some("add"), &back)
            .await
            .unwrap();
        assert_eq!(
            model["trace_rate"],
            ["1"],
            "{url}: None takes the server's value"
        );
    }
    s.shutdown().await;
}
