// A pool of `Vec<&'static str>` read as a pool of `Vec<&'a str>`: a
// short-lived string could be given back and later taken out as 'static.
use ebb_pool::ObjectPool;

fn shorten<'a>(pool: ObjectPool<Vec<&'static str>>) -> ObjectPool<Vec<&'a str>> {
    pool
}

fn main() {}
