//! Provider routes and circuit breakers (issue #31, docs/providers.md).
//!
//! - `breaker/admit_record`: one closed breaker's admit and record, the
//!   work the breaker adds to every send.
//! - `send/{plain,breaker}`: `DispatchEffects::run` of one SMS through the
//!   Vonage provider to the local Vonage server (real HTTP on loopback),
//!   without routes and breakers, then with a route and a breaker: the
//!   breaker's cost on the hot path is the difference.
//! - `failover/{first_failure,breaker_open}`: one send on a route whose
//!   primary answers Vonage's internal error (status "5") and whose
//!   secondary (a second local Vonage server, under another provider name)
//!   accepts: the time from the send to the secondary's acceptance, while
//!   the primary's breaker is still closed (the primary's failure is paid)
//!   and once it is open (the primary is passed over at once).
//!
//!     cargo bench -p clarion-bench --bench providers -- --warm-up-time 1 --measurement-time 3

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use clarion_dispatch::breaker::{Breaker, BreakerConfig, Outcome};
use clarion_dispatch::vonage::{VonageConfig, VonageProvider};
use clarion_dispatch::{DispatchEffects, Provider, SendError, SendOutcome};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_push_servers::vonage::{self, VonageServer};
use clarion_runtime::Effects;
use criterion::{criterion_group, criterion_main, Criterion};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn config(server: &VonageServer) -> VonageConfig {
    VonageConfig {
        base_url: server.base_url.clone(),
        api_key: vonage::API_KEY.into(),
        api_secret: vonage::API_SECRET.into(),
        from: "Acme".into(),
        status_callback_url: None,
        timeout_ms: 5_000,
    }
}

/// A Vonage provider under another name: the second provider of a route.
struct Secondary(VonageProvider);

#[async_trait]
impl Provider for Secondary {
    fn name(&self) -> &'static str {
        "twilio"
    }

    async fn send(
        &self,
        tenant: &str,
        msg: &pb::DispatchRequested,
    ) -> Result<SendOutcome, SendError> {
        self.0.send(tenant, msg).await
    }
}

fn request() -> Vec<u8> {
    Event {
        id: Id([7; 16]),
        tenant: TenantId::parse("acme").unwrap(),
        partition_key: "acme/ana".into(),
        occurred_at_ms: 1,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("router".into()),
        payload: Payload::DispatchRequested(pb::DispatchRequested {
            notification_id: "n1".into(),
            attempt_id: "a1".into(),
            channel: "sms".into(),
            provider: "vonage".into(),
            to: "+15145550101".into(),
            body: "Your technician is on the way".into(),
            ..Default::default()
        }),
    }
    .encode()
}

fn sms_route() -> HashMap<String, Vec<String>> {
    HashMap::from([("sms".into(), vec!["vonage".into(), "twilio".into()])])
}

fn breaker(c: &mut Criterion) {
    let b = Breaker::new("vonage", &BreakerConfig::default());
    let mut now = 1_700_000_000_000i64;
    c.bench_function("breaker/admit_record", |bench| {
        bench.iter(|| {
            now += 1;
            let (a, _) = b.admit(now);
            b.record(
                now,
                a,
                Outcome {
                    failed: false,
                    latency_ms: 12,
                },
            )
        })
    });
}

fn send(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(VonageServer::start());
    let provider = || Arc::new(VonageProvider::new(&config(&server)).unwrap()) as Arc<dyn Provider>;
    let plain = DispatchEffects::new(vec![provider()]);
    let routed =
        DispatchEffects::new(vec![provider()]).with_routes(sms_route(), &BreakerConfig::default());
    let e = request();
    let mut g = c.benchmark_group("send");
    g.bench_function("plain", |b| b.iter(|| rt.block_on(plain.run(&e, 1))));
    g.bench_function("breaker", |b| b.iter(|| rt.block_on(routed.run(&e, 1))));
    g.finish();
}

fn failover(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let primary = rt.block_on(VonageServer::start());
    let secondary = rt.block_on(VonageServer::start());
    primary.fail_with(200);
    let effects = |breaker: BreakerConfig| {
        DispatchEffects::new(vec![
            Arc::new(VonageProvider::new(&config(&primary)).unwrap()),
            Arc::new(Secondary(VonageProvider::new(&config(&secondary)).unwrap())),
        ])
        .with_routes(sms_route(), &breaker)
    };
    // A breaker that never opens: every send pays the primary's failure.
    let closed = effects(BreakerConfig {
        enabled: false,
        ..BreakerConfig::default()
    });
    let open = effects(BreakerConfig {
        open_ms: 3_600_000,
        ..BreakerConfig::default()
    });
    let e = request();
    for _ in 0..20 {
        rt.block_on(open.run(&e, 1));
    }
    assert_eq!(
        open.breaker_state("vonage"),
        Some(clarion_dispatch::breaker::State::Open)
    );
    let mut g = c.benchmark_group("failover");
    g.bench_function("first_failure", |b| {
        b.iter(|| rt.block_on(closed.run(&e, 1)))
    });
    g.bench_function("breaker_open", |b| b.iter(|| rt.block_on(open.run(&e, 1))));
    g.finish();
}

criterion_group!(benches, breaker, send, failover);
criterion_main!(benches);
