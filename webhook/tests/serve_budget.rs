//! The review memory budget is honest: answering the costliest reviews known never takes more heap than
//! the reservation a review of that size makes (`WORK_FACTOR` times its body, which stays allocated too).
//! Its own test binary: it counts every allocation of the process.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use mount_hints_webhook::serve::{answer_review, ReviewBudget};
use mount_hints_webhook::{GvisorScope, MutationSettings};
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{json, Value};
use support::{hostile_review, review_of};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(live, Ordering::SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Both blocks exist for a moment.
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap taken by `f` at its peak, above what was live when it started.
fn peak_heap<T>(f: impl FnOnce() -> T) -> usize {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    std::hint::black_box(f());
    PEAK.load(Ordering::SeqCst) - base
}

/// A gVisor pod with `count` emptyDirs, all mounted by one container: every one gets a hint.
fn many_volumes(count: usize) -> Vec<u8> {
    let volumes: Vec<Value> = (0..count).map(|i| json!({"name": format!("v{i}"), "emptyDir": {}})).collect();
    let mounts: Vec<Value> =
        (0..count).map(|i| json!({"name": format!("v{i}"), "mountPath": format!("/v{i}")})).collect();
    review_of(
        "volumes",
        json!({"metadata": {"name": "many"}, "spec": {"runtimeClassName": "gvisor", "volumes": volumes,
            "containers": [{"name": "app", "image": "busybox", "volumeMounts": mounts}]}}),
    )
}

#[test]
fn the_reservation_covers_the_peak_heap_of_the_costliest_reviews() {
    let settings = MutationSettings::default();
    let scope = GvisorScope::from_settings(&settings);
    let budget = ReviewBudget::new(usize::MAX, Gauge::default());
    let bodies = [
        ("60,000 removable annotations", hostile_review("hostile", 60_000)),
        ("20,000 hinted emptyDirs", many_volumes(20_000)),
        ("the bench's large body", include_bytes!("../benches/bodies/large.json").to_vec()),
    ];
    for (name, body) in bodies {
        let peak = peak_heap(|| answer_review(&body, &settings, &scope, false));
        let charge = budget.charge(body.len());
        eprintln!(
            "{name}: body {} bytes, peak heap {peak} bytes ({:.1}x), reserved {charge}",
            body.len(),
            peak as f64 / body.len() as f64
        );
        assert!(body.len() + peak <= charge, "{name}: body {} + peak {peak} > reservation {charge}", body.len());
    }
}
