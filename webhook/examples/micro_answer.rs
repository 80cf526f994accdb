fn main() {
    let settings = mount_hints_webhook::MutationSettings::default();
    let scope = mount_hints_webhook::GvisorScope::from_settings(&settings);
    let body = std::fs::read("webhook/benches/bodies/large.json").unwrap();
    let t = std::time::Instant::now();
    for _ in 0..5000 {
        std::hint::black_box(mount_hints_webhook::serve::answer_review(&body, &settings, &scope, false));
    }
    println!("large: answer {:?}", t.elapsed() / 5000);
}
