// A guard of `Vec<&'static str>` read as a guard of `Vec<&'a str>`: a
// short-lived string pushed into it would be given back to a pool of
// 'static strings when it drops.
use ebb_pool::Pooled;

fn shorten<'a>(guard: Pooled<Vec<&'static str>>) -> Pooled<Vec<&'a str>> {
    guard
}

fn main() {}
