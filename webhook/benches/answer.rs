//! The pure part of a review, without HTTP or TLS: decode the AdmissionReview, mutate, build the reply.
//!
//!   cargo bench -p mount-hints-webhook --bench answer
//!
//! Wall-clock time depends on what else the machine runs. For a load-independent figure, count instructions:
//! `--count BODY N` answers one body N times without timing (after one warm-up answer), for callgrind:
//!
//!   cargo bench -p mount-hints-webhook --bench answer --no-run   # prints the binary's path
//!   valgrind --tool=callgrind --callgrind-out-file=large.out target/release/deps/answer-HASH --count large 200
//!
//! Instructions per review = (total of a run with N) - (total with 0), divided by N.

use std::time::Instant;

use mount_hints_webhook::serve::answer_review;
use mount_hints_webhook::{GvisorScope, MutationSettings};

const BODIES: [(&str, &[u8]); 3] = [
    ("small", include_bytes!("bodies/small.json")),
    ("medium", include_bytes!("bodies/medium.json")),
    ("large", include_bytes!("bodies/large.json")),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let settings = MutationSettings::default();
    let scope = GvisorScope::from_settings(&settings);
    if let Some(i) = args.iter().position(|a| a == "--count") {
        let usage = "usage: answer --count small|medium|large N";
        let name = args.get(i + 1).expect(usage);
        let n: usize = args.get(i + 2).and_then(|n| n.parse().ok()).expect(usage);
        let (_, body) = BODIES.iter().find(|(b, _)| b == name).expect(usage);
        std::hint::black_box(answer_review(body, &settings, &scope, false));
        for _ in 0..n {
            std::hint::black_box(answer_review(std::hint::black_box(body), &settings, &scope, false));
        }
        return;
    }
    println!("| body | bytes | answer_review, median of 9 rounds |");
    println!("|---|---|---|");
    for (name, body) in BODIES {
        let per_round = if body.len() > 50_000 { 500 } else { 5_000 };
        let mut rounds: Vec<f64> = (0..9)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..per_round {
                    std::hint::black_box(answer_review(std::hint::black_box(body), &settings, &scope, false));
                }
                start.elapsed().as_secs_f64() * 1e6 / per_round as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!("| {name} | {} | {:.1} µs |", body.len(), rounds[4]);
    }
}
