//! The gateway's per-tenant request rate limit, per call (what every
//! authenticated gRPC and REST call pays on top of its work):
//!
//! - `check_one_tenant`: one tenant on the default rate (a keyed bucket in
//!   governor's DashMap) — the common case under load;
//! - `check_1000_tenants`: calls spread round-robin over 1,000 tenants
//!   (more map entries, less cache locality);
//! - `check_override`: a tenant with its own rate (a direct bucket found in
//!   a fixed map);
//! - `refused`: a tenant over its bucket (the 429 path: computing the wait).
//!
//! The quota is high enough that the accepted cases are never refused.
//!
//!     cargo bench -p clarion-bench --bench rate_limit -- --warm-up-time 1 --measurement-time 3

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use clarion_gateway::ratelimit::{Rate, RateLimitConfig, TenantLimiter};
use clarion_runtime::SystemClock;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn limiter() -> TenantLimiter {
    let huge = Rate {
        per_second: u32::MAX / 2,
        burst: u32::MAX / 2,
    };
    let mut tenants = HashMap::new();
    tenants.insert("big".to_string(), huge);
    tenants.insert(
        "tiny".to_string(),
        Rate {
            per_second: 1,
            burst: 1,
        },
    );
    TenantLimiter::new(
        &RateLimitConfig {
            default: huge,
            tenants,
        },
        Arc::new(SystemClock),
    )
}

fn bench(c: &mut Criterion) {
    let l = limiter();
    let names: Vec<String> = (0..1000).map(|i| format!("tenant-{i}")).collect();
    let mut g = c.benchmark_group("rate_limit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check_one_tenant", |b| {
        b.iter(|| black_box(l.check(black_box("acme"))))
    });
    let mut i = 0;
    g.bench_function("check_1000_tenants", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            black_box(l.check(&names[i]))
        })
    });
    g.bench_function("check_override", |b| {
        b.iter(|| black_box(l.check(black_box("big"))))
    });
    let _ = l.check("tiny");
    g.bench_function("refused", |b| {
        b.iter(|| black_box(l.check(black_box("tiny")).is_err()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
