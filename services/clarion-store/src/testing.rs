//! The conformance suite every `Store` backend runs. Each case gets a store
//! and a unique tenant, so cases can share one database.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{RowKey, Scan, Store, Table, WriteBatch};

fn k(tenant: &str, pk: &str, ck: &[u8]) -> RowKey {
    RowKey::new(Table::Subscribers, tenant, pk, ck.to_vec())
}

/// Put, get, overwrite, delete; absent rows are `None`.
pub async fn put_get_delete(store: Arc<dyn Store>, tenant: &str) {
    let key = k(tenant, "p", b"c");
    assert_eq!(store.get(&key).await.unwrap(), None);
    let mut b = WriteBatch::new();
    b.put(key.clone(), Bytes::from_static(b"one"));
    store.write(b).await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(Bytes::from_static(b"one"))
    );
    let mut b = WriteBatch::new();
    b.put(key.clone(), Bytes::from_static(b"two"));
    store.write(b).await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(Bytes::from_static(b"two"))
    );
    let mut b = WriteBatch::new();
    b.delete(key.clone());
    store.write(b).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
}

/// Tenants, partitions and tables never see each other's rows.
pub async fn keys_are_isolated(store: Arc<dyn Store>, tenant: &str) {
    let other = format!("{tenant}-other");
    let mut b = WriteBatch::new();
    b.put(k(tenant, "p", b"c"), Bytes::from_static(b"mine"));
    b.put(k(&other, "p", b"c"), Bytes::from_static(b"theirs"));
    b.put(
        RowKey::new(Table::Templates, tenant, "p", b"c".to_vec()),
        Bytes::from_static(b"tpl"),
    );
    store.write(b).await.unwrap();
    assert_eq!(
        store.get(&k(tenant, "p", b"c")).await.unwrap().unwrap(),
        "mine"
    );
    assert_eq!(
        store.get(&k(&other, "p", b"c")).await.unwrap().unwrap(),
        "theirs"
    );
    assert_eq!(store.get(&k(tenant, "q", b"c")).await.unwrap(), None);
    let got = store
        .get_many(&[
            k(tenant, "p", b"c"),
            RowKey::new(Table::Templates, tenant, "p", b"c".to_vec()),
            k(tenant, "p", b"zz"),
        ])
        .await
        .unwrap();
    assert_eq!(got, vec![Some("mine".into()), Some("tpl".into()), None]);
}

/// Scans return one partition's rows ordered by clustering key (unsigned
/// byte order), honour bounds, limits and reverse order.
pub async fn scans_are_ordered_and_bounded(store: Arc<dyn Store>, tenant: &str) {
    let mut b = WriteBatch::new();
    for i in [5u32, 1, 300, 42, 7, 256] {
        b.put(
            k(tenant, "scan", &i.to_be_bytes()),
            Bytes::from(i.to_string()),
        );
    }
    b.put(
        k(tenant, "elsewhere", &1u32.to_be_bytes()),
        Bytes::from_static(b"x"),
    );
    store.write(b).await.unwrap();
    let vals = |rows: Vec<(Vec<u8>, Bytes)>| {
        rows.into_iter()
            .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
            .collect::<Vec<_>>()
    };
    let all = store
        .scan(&Scan::partition(Table::Subscribers, tenant, "scan", 100))
        .await
        .unwrap();
    assert_eq!(vals(all), ["1", "5", "7", "42", "256", "300"]);
    let rev = store
        .scan(&Scan::partition(Table::Subscribers, tenant, "scan", 2).reversed())
        .await
        .unwrap();
    assert_eq!(vals(rev), ["300", "256"]);
    let mid = store
        .scan(
            &Scan::partition(Table::Subscribers, tenant, "scan", 100).range(
                Bound::Excluded(5u32.to_be_bytes().to_vec()),
                Bound::Included(256u32.to_be_bytes().to_vec()),
            ),
        )
        .await
        .unwrap();
    assert_eq!(vals(mid), ["7", "42", "256"]);
}

/// A batch is atomic: a delete and puts land together.
pub async fn batches_apply_together(store: Arc<dyn Store>, tenant: &str) {
    let mut b = WriteBatch::new();
    b.put(k(tenant, "a", b""), Bytes::from_static(b"1"));
    store.write(b).await.unwrap();
    let mut b = WriteBatch::new();
    b.delete(k(tenant, "a", b""));
    for i in 0..50u8 {
        b.put(
            RowKey::new(Table::Dedup, tenant, "batch", vec![i]),
            Bytes::from_static(b""),
        );
    }
    b.put(
        RowKey::new(Table::ProcessorOffsets, tenant, "p/t/0", b"".to_vec()),
        Bytes::from(7u64.to_be_bytes().to_vec()),
    );
    store.write(b).await.unwrap();
    assert_eq!(store.get(&k(tenant, "a", b"")).await.unwrap(), None);
    let dedup = store
        .scan(&Scan::partition(Table::Dedup, tenant, "batch", 1000))
        .await
        .unwrap();
    assert_eq!(dedup.len(), 50);
    assert_eq!(
        store
            .get(&RowKey::new(
                Table::ProcessorOffsets,
                tenant,
                "p/t/0",
                b"".to_vec()
            ))
            .await
            .unwrap(),
        Some(Bytes::from(7u64.to_be_bytes().to_vec()))
    );
}

/// A batch's ops apply in order: of two puts of one key the later wins, a
/// put after a delete of its key stands, a delete after a put removes it,
/// and runs of puts longer than one statement (the SQLite store writes up
/// to 32 rows per statement) across two tables all land.
pub async fn batch_ops_apply_in_order(store: Arc<dyn Store>, tenant: &str) {
    let mut b = WriteBatch::new();
    b.put(k(tenant, "gone", b""), Bytes::from_static(b"old"));
    b.put(k(tenant, "back", b""), Bytes::from_static(b"old"));
    store.write(b).await.unwrap();
    let row = |i: u8| RowKey::new(Table::Dedup, tenant, "order", vec![i]);
    let mut b = WriteBatch::new();
    for i in 0..45u8 {
        b.put(row(i), Bytes::from(vec![b'a', i]));
    }
    b.put(row(3), Bytes::from_static(b"second"));
    b.delete(k(tenant, "back", b""));
    b.put(k(tenant, "back", b""), Bytes::from_static(b"new"));
    b.put(k(tenant, "gone", b""), Bytes::from_static(b"brief"));
    b.delete(k(tenant, "gone", b""));
    for i in 45..52u8 {
        b.put(row(i), Bytes::from(vec![b'a', i]));
        b.put(k(tenant, "last", b""), Bytes::from(vec![i]));
    }
    store.write(b).await.unwrap();
    let rows = store
        .scan(&Scan::partition(Table::Dedup, tenant, "order", 1000))
        .await
        .unwrap();
    assert_eq!(rows.len(), 52);
    for (ck, v) in &rows {
        let i = ck[0];
        let want = if i == 3 {
            b"second".to_vec()
        } else {
            vec![b'a', i]
        };
        assert_eq!(v.to_vec(), want, "row {i}");
    }
    let get = |pk: &'static str| {
        let store = store.clone();
        let key = k(tenant, pk, b"");
        async move { store.get(&key).await.unwrap() }
    };
    assert_eq!(get("back").await, Some(Bytes::from_static(b"new")));
    assert_eq!(get("gone").await, None);
    assert_eq!(get("last").await, Some(Bytes::from(vec![51u8])));
}

/// Rows written with a TTL disappear after it; others stay.
pub async fn ttl_expires_rows(store: Arc<dyn Store>, tenant: &str) {
    let short = k(tenant, "ttl", b"short");
    let long = k(tenant, "ttl", b"long");
    let mut b = WriteBatch::new();
    b.put_ttl(
        short.clone(),
        Bytes::from_static(b"s"),
        Duration::from_secs(1),
    );
    b.put_ttl(
        long.clone(),
        Bytes::from_static(b"l"),
        Duration::from_secs(3600),
    );
    store.write(b).await.unwrap();
    assert!(store.get(&short).await.unwrap().is_some());
    // TTL is wall-clock in both databases; this is the one real wait in the suite.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.get(&short).await.unwrap(), None);
    assert!(store.get(&long).await.unwrap().is_some());
    let rows = store
        .scan(&Scan::partition(Table::Subscribers, tenant, "ttl", 10))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

/// insert-if-absent: the first writer wins, later ones see its value, and of
/// many concurrent callers exactly one wins.
pub async fn insert_if_absent_has_one_winner(store: Arc<dyn Store>, tenant: &str) {
    let key = RowKey::new(Table::ApiKeys, tenant, "idem", b"k".to_vec());
    assert_eq!(
        store
            .insert_if_absent(&key, "first".into(), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .insert_if_absent(&key, "second".into(), None)
            .await
            .unwrap(),
        Some(Bytes::from_static(b"first"))
    );
    let race = RowKey::new(Table::ApiKeys, tenant, "race", b"k".to_vec());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (s, r) = (store.clone(), race.clone());
        tasks.push(tokio::spawn(async move {
            s.insert_if_absent(&r, Bytes::from(format!("w{i}")), None)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap().is_none() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// A guarded batch applies while its guard row holds the value, and fails
/// as fenced, writing nothing, once another writer changed it.
pub async fn guarded_batches_are_fenced(store: Arc<dyn Store>, tenant: &str) {
    let epoch = RowKey::new(Table::ProcessorOffsets, tenant, "p/t/0", b"owner".to_vec());
    let row = k(tenant, "p", b"state");
    let mut claim = WriteBatch::new();
    claim.put(epoch.clone(), Bytes::from_static(b"1"));
    store.write(claim).await.unwrap();
    let mut b = WriteBatch::new();
    b.put(row.clone(), Bytes::from_static(b"by owner 1"))
        .guard(epoch.clone(), Bytes::from_static(b"1"));
    store.write(b).await.unwrap();
    // Owner 2 takes over; owner 1's next commit must not land.
    let mut claim = WriteBatch::new();
    claim.put(epoch.clone(), Bytes::from_static(b"2"));
    store.write(claim).await.unwrap();
    let mut b = WriteBatch::new();
    b.put(row.clone(), Bytes::from_static(b"late"))
        .guard(epoch.clone(), Bytes::from_static(b"1"));
    match store.write(b).await {
        Err(crate::StoreError::Fenced(m)) => assert!(m.starts_with(crate::FENCED), "{m}"),
        other => panic!("a stale epoch committed: {other:?}"),
    }
    assert_eq!(store.get(&row).await.unwrap().unwrap(), "by owner 1");
    // A guard on a row that does not exist does not hold either.
    let mut b = WriteBatch::new();
    b.put(row.clone(), Bytes::from_static(b"none"))
        .guard(k(tenant, "p", b"absent"), Bytes::from_static(b"1"));
    assert!(matches!(
        store.write(b).await,
        Err(crate::StoreError::Fenced(_))
    ));
    assert_eq!(store.get(&row).await.unwrap().unwrap(), "by owner 1");
}

/// Expands to one `#[tokio::test]` per case. `$make`: async expression giving
/// `Option<Arc<dyn Store>>` (None: backend not configured; the test prints that
/// it skipped), `$tenant`: fn giving a unique tenant.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr, $tenant:expr) => {
        $crate::store_conformance_tests!(@cases $make, $tenant,
            put_get_delete,
            keys_are_isolated,
            scans_are_ordered_and_bounded,
            batches_apply_together,
            batch_ops_apply_in_order,
            ttl_expires_rows,
            insert_if_absent_has_one_winner,
            guarded_batches_are_fenced,
        );
    };
    (@cases $make:expr, $tenant:expr, $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(store) = $make.await else { return };
                $crate::testing::$case(store, &$tenant()).await;
            }
        )*
    };
}
