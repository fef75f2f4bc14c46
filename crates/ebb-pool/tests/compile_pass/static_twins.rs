// The 'static twins of `compile_fail/`: the same types at their own
// lifetimes compile, and the handles stay `Send + Sync`.
use ebb_pool::{ObjectPool, ObjectPoolConfig, Pooled};

type AnyLifetime = for<'a> fn(&'a str) -> &'a str;

fn keep(pool: ObjectPool<Vec<&'static str>>) -> ObjectPool<Vec<&'static str>> {
    pool
}

fn keep_guard(guard: Pooled<Vec<&'static str>>) -> Pooled<Vec<&'static str>> {
    guard
}

fn keep_fns(pool: ObjectPool<Vec<AnyLifetime>>) -> ObjectPool<Vec<AnyLifetime>> {
    pool
}

fn send_sync<T: Send + Sync>() {}

fn first(s: &str) -> &str {
    s
}

fn main() {
    send_sync::<ObjectPool<Vec<&'static str>>>();
    send_sync::<Pooled<Vec<&'static str>>>();
    let pool = keep(ObjectPool::new(ObjectPoolConfig::default(), Vec::new).unwrap());
    let mut words = keep_guard(pool.get());
    words.push("static");
    drop(words);
    let fns = keep_fns(ObjectPool::new(ObjectPoolConfig::default(), Vec::new).unwrap());
    let mut f = fns.get();
    f.push(first);
    assert_eq!(f[0]("short-lived".to_string().as_str()), "short-lived");
}
