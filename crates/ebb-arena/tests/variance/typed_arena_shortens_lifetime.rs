// A `TypedArena<&'static str>` must not coerce to `&TypedArena<&'a str>`:
// through it a short-lived `&str` would be stored, and read back through
// the original as `&'static str` after its referent is gone.
use ebb_arena::{SlabConfig, TypedArena};

fn store<'a>(arena: &TypedArena<&'a str>, s: &'a str) {
    arena.insert(s).unwrap();
}

fn main() {
    let arena: TypedArena<&'static str> = TypedArena::new(SlabConfig::default()).unwrap();
    {
        let short = String::from("short-lived");
        store(&arena, &short);
    }
}
