//! Load benchmark of the real webhook binary over TLS keep-alive on loopback, next to a floor: the same server
//! stack (axum-server, rustls, the same TLS config) answering a constant AdmissionReview without decoding.
//!
//!   cargo bench -p mount-hints-webhook --bench serve_load
//!
//! The server runs pinned to CPU 1, this load generator to CPU 0. For each body (small: 1 container; medium: 2
//! containers, 4 emptyDirs; large: 30 containers, 60 volumes) floor and webhook alternate `BENCH_PAIRS` times
//! (default 5) at full load (16 connections, closed loop) and the median of the paired ratios is reported; then
//! webhook and floor at a fixed 2,000 reviews/s over 4 connections (open loop, latency measured from the
//! scheduled send time, so a stall counts in every request it delayed). The webhook logs as in production (one
//! JSON line per patched review) into a pipe that the bench drains, as a container runtime's log reader does.
//! Peak RSS is the largest VmHWM over all of its runs.
//! Two columns say how far the machine itself can be trusted: the share of the server CPU's time the hypervisor
//! took away (`steal` in /proc/stat) over the body's runs, and how late the generator sent at the fixed rate
//! through no fault of the server (after both the due time and the previous reply on that connection): a
//! fixed-rate tail no smaller than that lateness says nothing about the server.
//! Two more stand-ins run in every pair, to bound what any webhook on this stack could reach: `validate` (the
//! floor, but it first checks the body is JSON with serde_json, reading nothing: the least a webhook that
//! refuses malformed bodies must do) and `facts` (the floor, but it first decodes the fields the mutation reads,
//! borrowed, as the webhook does). Their paired ratios are ceilings: the webhook cannot beat them without a
//! faster JSON reader, whatever its rules cost. The server's CPU time per review (user + system, all threads,
//! from /proc/<pid>/stat over the whole run, warm-up included) is printed for the floor and the webhook: it
//! moves far less than the ratios on a shared machine.
//! `BENCH_SECS` sets the length of each measured run (default 5); `BENCH_RATE` the fixed rate; `BENCH_BODIES`
//! which bodies (a comma-separated list, default all);
//! `MOUNT_HINTS_WEBHOOK_BIN` runs another build of the webhook in the same harness.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use bytes::Bytes;
use mount_hints_webhook::certs::write_issued;
use mount_hints_webhook::pod::{PodFacts, Text};
use mount_hints_webhook::serve::{server_config, CertFiles, CertStore};
use serde::de::IgnoredAny;
use serde::Deserialize;
use support::{free_port, http_get, TlsClient};

const BODIES: [(&str, &str); 3] = [
    ("small", include_str!("bodies/small.json")),
    ("medium", include_str!("bodies/medium.json")),
    ("large", include_str!("bodies/large.json")),
];
const CONNECTIONS: usize = 16;
const RATE_CONNECTIONS: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--floor-server") {
        let work = StandIn::parse(&args[i + 3]);
        return run_floor(Path::new(&args[i + 1]), args[i + 2].parse().unwrap(), work);
    }
    if args.iter().any(|a| a == "--list") || args.iter().any(|a| a == "--test") {
        return; // `cargo test --benches` / `--list` probes: nothing to do.
    }
    let setting = |name: &str, default: u64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let secs = setting("BENCH_SECS", 5);
    let pairs = setting("BENCH_PAIRS", 5) as usize;
    let rate = setting("BENCH_RATE", 2000);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = Command::new("taskset").args(["-p", "-c", "0", &std::process::id().to_string()]).output();

    let dir = tempfile::tempdir().unwrap();
    let certs = support::loopback_certs(None);
    write_issued(dir.path(), &certs).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();

    println!("| body | floor reviews/s | webhook reviews/s | ratio (median of {pairs} pairs) [all] | ceilings: validate, facts (median ratios) | server CPU µs per review, user + system: floor, webhook | webhook p50 / p99 / p99.9 ms at full load | webhook peak RSS MiB | at {rate}/s: achieved, p50 / p99 / p99.9 ms | floor at {rate}/s: p50 / p99 / p99.9 ms | generator late at {rate}/s, p99 / p99.9 ms | server CPU stolen |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let only = std::env::var("BENCH_BODIES").ok();
    for (name, body) in BODIES {
        if only.as_deref().is_some_and(|only| !only.split(',').any(|b| b == name)) {
            continue;
        }
        let body = Bytes::from(body);
        let mut ratios = Vec::new();
        let mut ceilings = [Vec::new(), Vec::new()];
        let (mut floor_best, mut hook_best): (Option<Run>, Option<Run>) = (None, None);
        let mut peak_rss = 0.0f64;
        let mut paired_floor = f64::NAN;
        let stolen = Steal::start(SERVER_CPU);
        for _ in 0..pairs {
            for kind in [
                Kind::StandIn(StandIn::Floor),
                Kind::StandIn(StandIn::Validate),
                Kind::StandIn(StandIn::Facts),
                Kind::Webhook,
            ] {
                let server = Server::start(kind, dir.path());
                let client = TlsClient::new(&certs.ca_cert_pem, server.addr);
                let cpu = server.cpu_time();
                let mut run = runtime.block_on(closed_loop(&client, &body, Duration::from_secs(secs)));
                run.cpu_per_reply = server.cpu_since(cpu, run.replies);
                if kind == Kind::Webhook {
                    peak_rss = peak_rss.max(server.peak_rss_mib());
                }
                drop(server);
                assert_eq!(run.errors, 0, "{name}: failed requests");
                match kind {
                    Kind::StandIn(StandIn::Floor) => {
                        paired_floor = run.rps;
                        keep_faster(&mut floor_best, &run);
                    }
                    Kind::StandIn(StandIn::Validate) => ceilings[0].push(run.rps / paired_floor),
                    Kind::StandIn(StandIn::Facts) => ceilings[1].push(run.rps / paired_floor),
                    Kind::Webhook => {
                        ratios.push(run.rps / paired_floor);
                        keep_faster(&mut hook_best, &run);
                    }
                }
            }
        }
        ratios.sort_by(f64::total_cmp);
        for c in &mut ceilings {
            c.sort_by(f64::total_cmp);
        }
        // The fixed rate against the floor too: its tail is what the machine adds to any server.
        let (mut fixed, mut floor_fixed) = (None, None);
        for kind in [Kind::StandIn(StandIn::Floor), Kind::Webhook] {
            let server = Server::start(kind, dir.path());
            let client = TlsClient::new(&certs.ca_cert_pem, server.addr);
            let run = runtime.block_on(open_loop(&client, &body, rate, Duration::from_secs(secs.max(5) * 2)));
            assert_eq!(run.errors, 0, "{name}: failed requests at {rate}/s");
            if kind != Kind::Webhook {
                floor_fixed = Some(run);
            } else {
                peak_rss = peak_rss.max(server.peak_rss_mib());
                fixed = Some(run);
            }
        }
        let (fixed, floor_fixed) = (fixed.unwrap(), floor_fixed.unwrap());
        let (floor, hook) = (floor_best.unwrap(), hook_best.unwrap());
        let all: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} [{}] | {:.2}, {:.2} | {:.1} + {:.1}, {:.1} + {:.1} | {} | {peak_rss:.1} | {:.0}/s, {} | {} | {:.3} / {:.3} | {:.1}% |",
            floor.rps,
            hook.rps,
            ratios[ratios.len() / 2],
            all.join(" "),
            ceilings[0][ceilings[0].len() / 2],
            ceilings[1][ceilings[1].len() / 2],
            floor.cpu_per_reply.0,
            floor.cpu_per_reply.1,
            hook.cpu_per_reply.0,
            hook.cpu_per_reply.1,
            hook.percentiles(),
            fixed.rps,
            fixed.percentiles(),
            floor_fixed.percentiles(),
            percentile(&fixed.late, 99.0),
            percentile(&fixed.late, 99.9),
            stolen.percent()
        );
    }
}

/// Keeps the faster of `best` and `run`: the table shows each server's best run.
fn keep_faster(best: &mut Option<Run>, run: &Run) {
    if best.as_ref().is_none_or(|b| b.rps < run.rps) {
        *best = Some(run.clone());
    }
}

#[derive(Clone)]
struct Run {
    rps: f64,
    errors: usize,
    micros: Vec<u64>,
    /// Open loop only: how late each request was sent for reasons of the generator's own (see the module docs).
    late: Vec<u64>,
    /// Every reply, the warm-up's too: what the server's CPU time over the whole run was spent on.
    replies: usize,
    /// The server's user and system CPU time per reply, in µs, over the whole run.
    cpu_per_reply: (f64, f64),
}

impl Run {
    fn new(mut micros: Vec<u64>, errors: usize, elapsed: Duration) -> Run {
        micros.sort_unstable();
        let rps = micros.len() as f64 / elapsed.as_secs_f64();
        Run { rps, errors, replies: micros.len(), micros, late: Vec::new(), cpu_per_reply: (f64::NAN, f64::NAN) }
    }

    fn percentiles(&self) -> String {
        let at = |p| percentile(&self.micros, p);
        format!("{:.3} / {:.3} / {:.3}", at(50.0), at(99.0), at(99.9))
    }
}

/// The `p`th percentile of sorted microseconds, in milliseconds.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let i = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1;
    sorted[i] as f64 / 1000.0
}

/// Every connection sends its next request as soon as the previous answer arrived.
async fn closed_loop(client: &TlsClient, body: &Bytes, duration: Duration) -> Run {
    let warm_up = Instant::now() + Duration::from_secs(1);
    let start = warm_up;
    let end = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut conn = client.connect().await.unwrap();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let (mut micros, mut errors, mut warm_up_replies) = (Vec::new(), 0, 0);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    return Measured { micros, errors, late: Vec::new(), warm_up_replies };
                }
                match conn.post("/mutate", "application/json", body.clone()).await {
                    Ok((200, _)) if sent >= start => micros.push(sent.elapsed().as_micros() as u64),
                    Ok((200, _)) => warm_up_replies += 1,
                    _ => errors += 1,
                }
            }
        }));
    }
    collect(tasks, duration).await
}

/// A fixed rate spread over a few connections; latency counts from the scheduled send time, so a stall shows up
/// in every request it delayed.
async fn open_loop(client: &TlsClient, body: &Bytes, rate: u64, duration: Duration) -> Run {
    let interval = Duration::from_nanos(1_000_000_000 * RATE_CONNECTIONS as u64 / rate);
    let warm_up = Duration::from_secs(1);
    let t0 = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for c in 0..RATE_CONNECTIONS {
        let mut conn = client.connect().await.unwrap();
        let body = body.clone();
        let first = t0 + interval * c as u32 / RATE_CONNECTIONS as u32;
        tasks.push(tokio::spawn(async move {
            let (mut micros, mut errors, mut late, mut warm_up_replies) = (Vec::new(), 0, Vec::new(), 0);
            let mut due = first;
            let mut previous_reply = t0;
            while due < t0 + warm_up + duration {
                // The timer wheel has millisecond resolution: sleep most of the way, then yield until due, so
                // the schedule itself adds no latency.
                tokio::time::sleep_until((due - Duration::from_millis(1)).into()).await;
                while Instant::now() < due {
                    tokio::task::yield_now().await;
                }
                let generator_late = previous_reply.max(due).elapsed();
                match conn.post("/mutate", "application/json", body.clone()).await {
                    Ok((200, _)) if due >= t0 + warm_up => {
                        micros.push(due.elapsed().as_micros() as u64);
                        late.push(generator_late.as_micros() as u64);
                    }
                    Ok((200, _)) => warm_up_replies += 1,
                    _ => errors += 1,
                }
                previous_reply = Instant::now();
                due += interval;
            }
            Measured { micros, errors, late, warm_up_replies }
        }));
    }
    collect(tasks, duration).await
}

/// One connection's share of a run.
struct Measured {
    micros: Vec<u64>,
    errors: usize,
    late: Vec<u64>,
    warm_up_replies: usize,
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Measured>>, duration: Duration) -> Run {
    let (mut all, mut errors, mut all_late, mut replies) = (Vec::new(), 0, Vec::new(), 0);
    for task in tasks {
        let measured = task.await.unwrap();
        replies += measured.micros.len() + measured.warm_up_replies;
        all.extend(measured.micros);
        errors += measured.errors;
        all_late.extend(measured.late);
    }
    all_late.sort_unstable();
    Run { late: all_late, replies, ..Run::new(all, errors, duration) }
}

/// The CPU the servers are pinned to.
const SERVER_CPU: usize = 1;

/// The share of one CPU's time the hypervisor gave to others (`steal` in /proc/stat) since `start`.
struct Steal {
    cpu: usize,
    at_start: (u64, u64),
}

impl Steal {
    fn start(cpu: usize) -> Steal {
        Steal { cpu, at_start: Steal::read(cpu) }
    }

    /// (all ticks, stolen ticks) of the CPU so far; zeros where /proc/stat has no such line.
    fn read(cpu: usize) -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let name = format!("cpu{cpu}");
        let Some(line) = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str())) else {
            return (0, 0);
        };
        // user nice system idle iowait irq softirq steal (guest time is already inside user).
        let ticks: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|t| t.parse().ok()).collect();
        (ticks.iter().sum(), ticks.get(7).copied().unwrap_or(0))
    }

    fn percent(&self) -> f64 {
        let (total, stolen) = Steal::read(self.cpu);
        let (total, stolen) = (total - self.at_start.0, stolen - self.at_start.1);
        if total == 0 {
            return f64::NAN;
        }
        stolen as f64 * 100.0 / total as f64
    }
}

/// Which server a run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Webhook,
    StandIn(StandIn),
}

/// This bench re-executed as a server on the webhook's stack that answers a constant reply after `StandIn`'s work.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StandIn {
    /// Nothing: the stack's own cost.
    Floor,
    /// Check the body is JSON, reading nothing.
    Validate,
    /// Decode the pod fields the mutation reads, borrowed from the body, and skip the rest.
    Facts,
}

impl StandIn {
    fn arg(self) -> &'static str {
        match self {
            StandIn::Floor => "floor",
            StandIn::Validate => "validate",
            StandIn::Facts => "facts",
        }
    }

    fn parse(arg: &str) -> StandIn {
        [StandIn::Floor, StandIn::Validate, StandIn::Facts].into_iter().find(|w| w.arg() == arg).expect("a stand-in")
    }

    /// Whether the body passes this stand-in's work; the floor takes anything.
    fn accepts(self, body: &[u8]) -> bool {
        // As the webhook reads a body: checked as UTF-8 in bulk, then parsed as text.
        let text = || std::str::from_utf8(body).ok();
        match self {
            StandIn::Floor => true,
            StandIn::Validate => text().is_some_and(|t| serde_json::from_str::<IgnoredAny>(t).is_ok()),
            StandIn::Facts => {
                let review = text().and_then(|t| serde_json::from_str::<ReviewFacts<'_>>(t).ok());
                // Kept alive to the end, as the webhook's answer keeps them.
                review.map(|r| std::hint::black_box((r.request.uid, r.request.object))).is_some()
            }
        }
    }
}

/// What the `facts` stand-in decodes: the uid and the pod's facts, every other field skipped.
#[derive(Deserialize)]
struct ReviewFacts<'a> {
    #[serde(borrow)]
    request: RequestFacts<'a>,
}

#[derive(Deserialize)]
struct RequestFacts<'a> {
    #[serde(borrow)]
    uid: Text<'a>,
    #[serde(borrow)]
    object: PodFacts<Text<'a>>,
}

/// A server process pinned to CPU 1: the real binary, or this bench re-executed as a stand-in.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(kind: Kind, certs: &Path) -> Server {
        let port = free_port();
        let health = free_port();
        let mut command = Command::new("taskset");
        command.args(["-c", &SERVER_CPU.to_string()]);
        if let Kind::StandIn(work) = kind {
            command.arg(std::env::current_exe().unwrap()).arg("--floor-server").arg(certs).arg(port.to_string());
            command.arg(work.arg());
        } else {
            // `MOUNT_HINTS_WEBHOOK_BIN`: another build of the webhook, to compare (same harness, same floor).
            let binary = std::env::var_os("MOUNT_HINTS_WEBHOOK_BIN")
                .map_or_else(|| env!("CARGO_BIN_EXE_mount-hints-webhook").into(), std::path::PathBuf::from);
            command
                .arg(binary)
                .args(["serve", "--no-cluster", "--drain-delay", "0s"])
                .args(["--listen", &format!("127.0.0.1:{port}"), "--health-listen", &format!("127.0.0.1:{health}")])
                .arg("--tls-cert")
                .arg(certs.join("tls.crt"))
                .arg("--tls-key")
                .arg(certs.join("tls.key"))
                .env_remove("RUST_LOG");
        }
        // The webhook's log goes where a container runtime takes it: a pipe that a reader drains (on the
        // generator's CPU), not /dev/null, so that what a log write costs the server is counted.
        let stderr = if kind == Kind::Webhook { Stdio::piped() } else { Stdio::null() };
        let mut child = command.stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
        if let Some(mut log) = child.stderr.take() {
            std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        }
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        if kind == Kind::Webhook {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let health: SocketAddr = format!("127.0.0.1:{health}").parse().unwrap();
            while rt.block_on(http_get(health, "/readyz")).map(|r| r.0).unwrap_or(0) != 200 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Server { child, addr }
    }

    /// The server's (user, system) CPU time so far, all threads, in clock ticks.
    fn cpu_time(&self) -> (u64, u64) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // The command name may hold spaces; the fields after it are plain numbers. utime and stime are the
        // 14th and 15th fields, so the 12th and 13th after the name.
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let mut fields = after_name.split_whitespace().skip(11).map(|f| f.parse::<u64>().unwrap_or(0));
        (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
    }

    /// (user, system) µs per reply since `start`.
    fn cpu_since(&self, start: (u64, u64), replies: usize) -> (f64, f64) {
        // SAFETY: sysconf reads a constant.
        let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let now = self.cpu_time();
        let per_reply = |ticks: u64| ticks as f64 * 1e6 / ticks_per_sec / replies.max(1) as f64;
        (per_reply(now.0 - start.0), per_reply(now.1 - start.1))
    }

    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The floor and the other stand-ins: the webhook's own TLS configuration and server stack, a constant reply.
fn run_floor(certs: &Path, port: u16, work: StandIn) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = Arc::new(CertStore::default());
    let files = CertFiles { cert: certs.join("tls.crt"), key: certs.join("tls.key") };
    store.set(files.load().unwrap());
    let config = server_config(store, false).unwrap();
    const REPLY: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"2b6a6c1e-6f1d-4b8e-9d35-6a4a7f0c0001","allowed":true,"status":{}}}"#;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime
        .block_on(async move {
            let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(config)).acceptor(NoDelayAcceptor::new());
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let app = Router::new().route(
                "/mutate",
                post(move |body: Bytes| async move {
                    assert!(work.accepts(&body), "the bench sent a body the {} stand-in refuses", work.arg());
                    ([(axum::http::header::CONTENT_TYPE, "application/json")], REPLY)
                }),
            );
            axum_server::from_tcp(listener)
                .unwrap()
                .acceptor(acceptor)
                .http1_only()
                .serve(app.into_make_service())
                .await
        })
        .unwrap();
}
