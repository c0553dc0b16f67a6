//! Criterion micro-benchmarks of the two hot paths (`cargo bench -p clerk-sync-bench`): the
//! gateway's Svix verification plus envelope parsing of a 2 KB event, and the worker's building of
//! a 128-message batch (parse + column vectors). `clerk-sync-bench all` times the same functions.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use clerk_sync_bench::micro::{VerifyFixture, build_batch};
use clerk_sync_bench::workload;

fn verify_and_parse(c: &mut Criterion) {
    let fixture = VerifyFixture::new().expect("fixture");
    assert!(fixture.verify_and_parse(), "the fixture verifies");
    let mut group = c.benchmark_group("gateway");
    group.throughput(Throughput::Bytes(fixture.body.len() as u64));
    group.bench_function("verify_and_parse_2kb", |b| b.iter(|| fixture.verify_and_parse()));
    group.finish();
}

fn batch(c: &mut Criterion) {
    const BATCH: usize = 128;
    let w = workload::generate(BATCH * 32, 5, "criterion");
    let mut group = c.benchmark_group("worker");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut round = 0;
    group.bench_function("build_batch_128", |b| {
        b.iter(|| {
            // A different slice each time: not always the same users, as in a real queue.
            let start = (round % 32) * BATCH;
            round += 1;
            build_batch(&w.messages[start..start + BATCH])
        })
    });
    group.finish();
}

criterion_group!(benches, verify_and_parse, batch);
criterion_main!(benches);
