//! The benchmarks of `docs/benchmarks.md`, each printing its figures:
//! `cargo run --release -p conformance -- perf --bench <name>`.

use std::time::Duration;

use serving_client::Client;

use super::baselines::{ort_add, quantile};
use super::echo;
use super::feed::Feed;
use super::load::{Stats, Workload, run_feed, run_load};
use super::memory;
use crate::target::{Family, Target, Transport};

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub(super) fn client(target: &Target) -> Client {
    Client::builder()
        .endpoint(target.url())
        .protocol(target.family.protocol())
        .timeout(Duration::from_secs(300))
        .retries(0)
        .build()
        .expect("a valid endpoint")
}

/// The bare echo servers of both transports, started for one benchmark.
struct Echoes {
    grpc: std::net::SocketAddr,
    rest: std::net::SocketAddr,
}

impl Echoes {
    async fn start() -> Result<Echoes, String> {
        Ok(Echoes {
            grpc: echo::grpc().await.map_err(|e| e.to_string())?,
            rest: echo::rest().await.map_err(|e| e.to_string())?,
        })
    }

    /// The echo server standing in for `t`: same family and transport.
    fn beside(&self, t: &Target) -> Target {
        let addr = match t.transport {
            Transport::Grpc => self.grpc,
            Transport::Http => self.rest,
        };
        Target {
            family: t.family,
            transport: t.transport,
            tls: false,
            authority: addr.to_string(),
        }
    }
}

/// `ms+grpc`, `oip+http`, ...: a target's family and transport.
fn label(t: &Target) -> String {
    let transport = match t.transport {
        Transport::Grpc => "grpc",
        Transport::Http => "http",
    };
    format!("{}+{transport}", t.family.prefix())
}

/// Serving overhead: `add` at concurrency 1 on the reference server, next
/// to a bare echo of the same transport and ONNX Runtime in-process; then
/// the same with the server and the echo each in a process of its own,
/// and beside them the server of `baseline` (an earlier build of this
/// program) when given: before and after a change, in one run.
pub async fn overhead(
    exe: &std::path::Path,
    window: Duration,
    baseline: Option<&std::path::Path>,
) -> Result<(), String> {
    in_process(window).await?;
    out_of_process(exe, window, baseline).await
}

/// The reference server and the echo servers each in a process of their
/// own, the load generator in this one: three rounds, alternating, and the
/// median p50 of each. What moves from the in-process figures is the cost
/// of crossing processes (wake-ups on both sides of the socket), paid by
/// the echo as by the server.
async fn out_of_process(
    exe: &std::path::Path,
    window: Duration,
    baseline: Option<&std::path::Path>,
) -> Result<(), String> {
    let (server, sg, sh) = crate::control::spawn_with(exe, 512).await?;
    let (echo, eg, eh) = crate::control::spawn_serve(exe, &["--echo"]).await?;
    let before = match baseline {
        Some(b) => Some(crate::control::spawn_with(b, 512).await?),
        None => None,
    };
    println!(
        "out of process (server and echo each in its own process; median of 3 rounds of {:.0} s):",
        window.as_secs_f64()
    );
    if let Some(b) = baseline {
        println!("baseline: the server of {}", b.display());
    }
    println!(
        "{:<28} {:>10} {:>12} {:>14}{}",
        "target",
        "p50 µs",
        "echo p50",
        "overhead p50",
        if baseline.is_some() {
            format!(" {:>14} {:>12}", "baseline p50", "change µs")
        } else {
            String::new()
        }
    );
    for family in [Family::MindSpore, Family::OpenInference] {
        for (transport, ours, bare) in [(Transport::Grpc, &sg, &eg), (Transport::Http, &sh, &eh)] {
            let (t, e) = (
                Target::plain(family, transport, ours),
                Target::plain(family, transport, bare),
            );
            let before = before.as_ref().map(|(_, g, h)| {
                let addr = match transport {
                    Transport::Grpc => g,
                    Transport::Http => h,
                };
                let t = Target::plain(family, transport, addr);
                (client(&t), t)
            });
            let (ct, ce) = (client(&t), client(&e));
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..3 {
                if let Some((cb, tb)) = &before {
                    let s = run_load(
                        cb,
                        tb,
                        Workload::Add,
                        1,
                        Duration::from_millis(500),
                        window,
                        None,
                    )
                    .await;
                    c.push(us(s.quantile(0.5)));
                }
                let s = run_load(
                    &ct,
                    &t,
                    Workload::Add,
                    1,
                    Duration::from_millis(500),
                    window,
                    None,
                )
                .await;
                a.push(us(s.quantile(0.5)));
                let s = run_load(
                    &ce,
                    &e,
                    Workload::Add,
                    1,
                    Duration::from_millis(500),
                    window,
                    None,
                )
                .await;
                b.push(us(s.quantile(0.5)));
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (a, b) = (median(&mut a), median(&mut b));
            let change = if c.is_empty() {
                String::new()
            } else {
                let c = median(&mut c);
                format!(" {:>14.1} {:>+12.1}", c, a - c)
            };
            println!(
                "{:<28} {:>10.1} {:>12.1} {:>14.1}{change}",
                label(&t),
                a,
                b,
                a - b
            );
        }
    }
    drop((server, echo, before));
    Ok(())
}

async fn in_process(window: Duration) -> Result<(), String> {
    let (control, targets) = crate::control::start_with(None, 512).await?;
    let echoes = Echoes::start().await?;
    let ort = ort_add(2000, 20000)?;
    let (ort50, ort99) = (quantile(&ort, 0.5), quantile(&ort, 0.99));
    println!(
        "ONNX Runtime in-process, add: p50 {:.1} µs, p99 {:.1} µs ({} runs)",
        us(ort50),
        us(ort99),
        ort.len()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>12} {:>12} {:>14}",
        "target", "p50 µs", "p99 µs", "echo p50", "echo p99", "overhead p50"
    );
    for t in &targets {
        let e = echoes.beside(t);
        let ours = run_load(
            &client(t),
            t,
            Workload::Add,
            1,
            Duration::from_secs(1),
            window,
            None,
        )
        .await;
        let bare = run_load(
            &client(&e),
            &e,
            Workload::Add,
            1,
            Duration::from_secs(1),
            window,
            None,
        )
        .await;
        let overhead = us(ours.quantile(0.5)) - us(bare.quantile(0.5)) - us(ort50);
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>12.1} {:>12.1} {:>14.1}{}",
            label(t),
            us(ours.quantile(0.5)),
            us(ours.quantile(0.99)),
            us(bare.quantile(0.5)),
            us(bare.quantile(0.99)),
            overhead,
            errors(&ours, &bare)
        );
    }
    control.running.shutdown().await;
    Ok(())
}

fn errors(a: &Stats, b: &Stats) -> String {
    if a.errors + b.errors == 0 {
        String::new()
    } else {
        format!(
            "  ({} / {} errors: {:?} {:?})",
            a.errors, b.errors, a.first_error, b.first_error
        )
    }
}

/// Throughput of `add` at concurrency 1, 16 and 64 on each transport, and
/// of the bare echo servers with the same requests.
pub async fn throughput(window: Duration) -> Result<(), String> {
    let (control, targets) = crate::control::start_with(None, 512).await?;
    let started = Echoes::start().await?;
    let echoes: Vec<Target> = targets.iter().map(|t| started.beside(t)).collect();
    for (i, t) in targets.iter().chain(&echoes).enumerate() {
        if i == targets.len() {
            println!("bare echo servers, same requests:");
        }
        println!("{t}");
        let c = client(t);
        for concurrency in [1, 16, 64] {
            let s = run_load(
                &c,
                t,
                Workload::Add,
                concurrency,
                Duration::from_secs(1),
                window,
                None,
            )
            .await;
            println!("  {}", s.line());
        }
    }
    control.running.shutdown().await;
    Ok(())
}

/// Large tensors: identity of 1, 64 and 256 MiB FP32 over gRPC and REST
/// (binary extension), next to bare echoes and raw loopback TCP.
pub async fn large() -> Result<(), String> {
    let (control, targets) = crate::control::start_with(None, 512).await?;
    let echoes = Echoes::start().await?;
    let picks = [
        (Family::OpenInference, Transport::Grpc),
        (Family::OpenInference, Transport::Http),
        (Family::MindSpore, Transport::Grpc),
    ];
    for mib in [1usize, 64, 256] {
        let bytes = mib << 20;
        let requests = (1024 / mib).clamp(4, 200);
        let tcp = echo::raw_tcp(bytes, requests)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{mib} MiB: raw loopback TCP, request then reply, {tcp:.3} GB/s (best of {requests})"
        );
        for (family, transport) in picks {
            let t = targets
                .iter()
                .find(|t| t.family == family && t.transport == transport)
                .expect("four targets");
            let e = echoes.beside(t);
            let (ct, ce) = (client(t), client(&e));
            // One request each first: connections, pools and pages.
            run_load(
                &ct,
                t,
                Workload::Identity(bytes),
                1,
                Duration::ZERO,
                Duration::from_secs(60),
                Some(1),
            )
            .await;
            run_load(
                &ce,
                &e,
                Workload::Identity(bytes),
                1,
                Duration::ZERO,
                Duration::from_secs(60),
                Some(1),
            )
            .await;
            let ours = run_load(
                &ct,
                t,
                Workload::Identity(bytes),
                1,
                Duration::ZERO,
                Duration::from_secs(120),
                Some(requests),
            )
            .await;
            let bare = run_load(
                &ce,
                &e,
                Workload::Identity(bytes),
                1,
                Duration::ZERO,
                Duration::from_secs(120),
                Some(requests),
            )
            .await;
            println!(
                "  {:<9} server {:>7.3} GB/s ({:>5.1}% of TCP) p50 {:>9.1} ms | echo {:>7.3} GB/s ({:>5.1}%){}",
                label(t),
                ours.gbps(),
                100.0 * ours.gbps() / tcp,
                ours.quantile(0.5).as_secs_f64() * 1e3,
                bare.gbps(),
                100.0 * bare.gbps() / tcp,
                errors(&ours, &bare)
            );
        }
        // The same identity with both tensors in system shared memory
        // (client SDK and server; the messages carry names and offsets).
        let t = targets
            .iter()
            .find(|t| t.family == Family::OpenInference && t.transport == Transport::Grpc)
            .expect("four targets");
        let c = client(t);
        let feed = std::sync::Arc::new(
            Feed::shared_memory(&c, t.family, Workload::Identity(bytes), 1).await?,
        );
        // One request first: the output region's pages are touched once.
        run_feed(
            &c,
            &feed,
            1,
            Duration::ZERO,
            Duration::from_secs(60),
            Some(1),
        )
        .await;
        let placed = run_feed(
            &c,
            &feed,
            1,
            Duration::ZERO,
            Duration::from_secs(120),
            Some(requests),
        )
        .await;
        println!(
            "  oip+grpc+shm server {:>7.3} GB/s ({:>5.1}% of TCP) p50 {:>9.1} ms{}",
            placed.gbps(),
            100.0 * placed.gbps() / tcp,
            placed.quantile(0.5).as_secs_f64() * 1e3,
            errors(&placed, &Stats::default())
        );
        feed.release(&c).await;
    }
    control.running.shutdown().await;
    Ok(())
}

/// Peak resident memory of a server process serving one 256 MiB request.
pub async fn memory(exe: &std::path::Path) -> Result<(), String> {
    let (child, grpc, _) = crate::control::spawn_with(exe, 512).await?;
    let pid = child.id().ok_or("the server process has no pid")?;
    let t = Target {
        family: Family::OpenInference,
        transport: Transport::Grpc,
        tls: false,
        authority: grpc.trim_start_matches("grpc://").to_owned(),
    };
    let c = client(&t);
    // Warm up: load paths and allocator pools with a small request.
    run_load(
        &c,
        &t,
        Workload::Identity(1 << 20),
        1,
        Duration::ZERO,
        Duration::from_secs(30),
        Some(3),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle, _) = memory::rss(pid).ok_or("cannot read /proc")?;
    let reset = memory::reset_peak(pid);
    let payload = 256usize << 20;
    let s = run_load(
        &c,
        &t,
        Workload::Identity(payload),
        1,
        Duration::ZERO,
        Duration::from_secs(120),
        Some(1),
    )
    .await;
    let (_, peak) = memory::rss(pid).ok_or("cannot read /proc")?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "one 256 MiB request (OIP gRPC, identity, {} error(s)): server RSS idle {:.0} MiB, peak {:.0} MiB{}; peak - idle = {:.2} x payload; peak = {:.2} x payload",
        s.errors,
        mib(idle),
        mib(peak),
        if reset {
            ""
        } else {
            " (peak since start: clear_refs refused)"
        },
        (peak.saturating_sub(idle)) as f64 / payload as f64,
        peak as f64 / payload as f64
    );
    // Then 64 clients at once, each sending 64 MiB identities (4 GiB
    // offered at a time): the server's incoming budget (--max-incoming-mb,
    // default 1024) admits what fits and refuses the rest UNAVAILABLE, so
    // the peak stays bounded whatever the clients send.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, _) = memory::rss(pid).ok_or("cannot read /proc")?;
    memory::reset_peak(pid);
    let each = 64usize << 20;
    let many = run_load(
        &c,
        &t,
        Workload::Identity(each),
        64,
        Duration::ZERO,
        Duration::from_secs(120),
        Some(256),
    )
    .await;
    let (_, peak) = memory::rss(pid).ok_or("cannot read /proc")?;
    // What the allocator still holds once the load is over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, _) = memory::rss(pid).ok_or("cannot read /proc")?;
    println!(
        "64 clients x 64 MiB (OIP gRPC, identity, 256 requests): {} answered, {} refused{}; server RSS before {:.0} MiB, peak {:.0} MiB, 2 s after {:.0} MiB",
        many.requests,
        many.errors,
        many.first_error
            .as_deref()
            .map(|e| format!(" (first: {})", e.chars().take(300).collect::<String>()))
            .unwrap_or_default(),
        mib(before),
        mib(peak),
        mib(after)
    );
    drop(child);
    Ok(())
}
