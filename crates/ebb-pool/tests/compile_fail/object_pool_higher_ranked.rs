// Both types are 'static, so `T: 'static` alone does not refuse this; only
// invariance does. Read as a pool of `fn(&'static str) -> &'static str`, it
// could be given a function that keeps its argument; taken out through the
// original handle, that function is called with a short-lived string.
use ebb_pool::ObjectPool;

type AnyLifetime = for<'a> fn(&'a str) -> &'a str;
type StaticOnly = fn(&'static str) -> &'static str;

fn widen(pool: ObjectPool<Vec<AnyLifetime>>) -> ObjectPool<Vec<StaticOnly>> {
    pool
}

fn main() {}
