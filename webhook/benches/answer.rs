//! The pure part of a review, without HTTP or TLS: decode the AdmissionReview, mutate, build the reply.
//!
//!   cargo bench -p mount-hints-webhook --bench answer

use std::time::Instant;

use mount_hints_webhook::serve::answer_review;
use mount_hints_webhook::{GvisorScope, MutationSettings};

const BODIES: [(&str, &[u8]); 3] = [
    ("small", include_bytes!("bodies/small.json")),
    ("medium", include_bytes!("bodies/medium.json")),
    ("large", include_bytes!("bodies/large.json")),
];

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let settings = MutationSettings::default();
    let scope = GvisorScope::from_settings(&settings);
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
