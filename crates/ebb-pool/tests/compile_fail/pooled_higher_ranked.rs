// The guard's twin of `object_pool_higher_ranked.rs`: a `StaticOnly`
// function written into the guard goes back to a pool of `AnyLifetime`.
use ebb_pool::Pooled;

type AnyLifetime = for<'a> fn(&'a str) -> &'a str;
type StaticOnly = fn(&'static str) -> &'static str;

fn widen(guard: Pooled<Vec<AnyLifetime>>) -> Pooled<Vec<StaticOnly>> {
    guard
}

fn main() {}
